"""SeFi-IDE: one photo -> a pseudo-word V* with five per-stage (key, value) token pairs.

* :mod:`.stages`: stage of a timestep or sigma (stage 4 = the noisy end).
* :mod:`.tokens`: :class:`IdTokens`, the ten input embeddings of one identity.
* :mod:`.prompt`: finding V* in a tokenised prompt and turning it into one slot.
* :mod:`.contexts`: per-stage key/value encodings of a prompt and swapping them into a batch.
* :mod:`.attention`: the face-wise attention loss.
* :mod:`.photo`: cropping the training photo.
* :mod:`.train`: the one-photo learning loop.
"""

from .attention import SD15_LOSS_SITES, AttentionCapture, facewise_attention_loss
from .contexts import PromptStages, swap_contexts
from .stages import NUM_STAGES, stage_of_sigma, stage_of_timestep
from .tokens import IdTokens

__all__ = [
    "SD15_LOSS_SITES",
    "AttentionCapture",
    "facewise_attention_loss",
    "PromptStages",
    "swap_contexts",
    "NUM_STAGES",
    "stage_of_sigma",
    "stage_of_timestep",
    "IdTokens",
]

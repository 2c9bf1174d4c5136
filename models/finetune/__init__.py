"""Test-time fine-tuning shared by FaceA-Net and SeFi-IDE (ComfyUI-free).

* :mod:`.loop`: ``train_loop`` (seedable, interruptible optimisation loop) and ``StepReport``.
* :mod:`.denoise`: the SD1.x VP schedule and the masked epsilon loss against a denoiser callable.
* :mod:`.identity_file`: one atomically written ``.safetensors`` per trained identity, validated on load.
* :mod:`.curve`: the loss-curve image.

The API is the one agreed for both methods; additions beyond it (nothing was changed):
``TrainingDiverged`` (a NaN/inf loss stops the loop, nothing is written), ``step_generator``
(the per-step generator, so continued runs draw like one long run), ``losses_of``,
``timestep``/``sigma`` helpers, ``image_sha256`` / ``tensors_sha256`` (the provenance hashes),
``read_identity_header``, and keyword-only ``first_step``/``title`` on ``loss_curve_image``.
``StepReport.step`` is 1-based and global (``start_step + i + 1``); ``step_fn`` receives the
0-based global index.
"""

from .curve import loss_curve_image, smooth
from .denoise import (
    SD15_SCHEDULE,
    VPSchedule,
    add_noise,
    eps_from_denoised,
    eps_loss,
    masked_mse,
    sample_sigmas,
    sample_timesteps,
    sigma_to_timestep,
    timestep_to_sigma,
)
from .identity_file import (
    FORMAT,
    FORMAT_VERSION,
    KINDS,
    Provenance,
    image_sha256,
    load_identity_file,
    read_identity_header,
    save_identity_file,
    tensors_sha256,
    utc_now,
)
from .loop import StepReport, TrainingDiverged, TrainingInterrupted, losses_of, step_generator, train_loop

__all__ = [
    "StepReport",
    "TrainingInterrupted",
    "TrainingDiverged",
    "train_loop",
    "step_generator",
    "losses_of",
    "VPSchedule",
    "SD15_SCHEDULE",
    "sample_timesteps",
    "sample_sigmas",
    "timestep_to_sigma",
    "sigma_to_timestep",
    "masked_mse",
    "add_noise",
    "eps_from_denoised",
    "eps_loss",
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "Provenance",
    "save_identity_file",
    "load_identity_file",
    "read_identity_header",
    "image_sha256",
    "tensors_sha256",
    "utc_now",
    "loss_curve_image",
    "smooth",
]

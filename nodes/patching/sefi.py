"""SeFi-IDE's UNet patching: per-stage key/value contexts at sampling, attention capture while learning.

Sampling (:func:`apply_sefi`): the MODEL clone gets

* a ``calc_cond_batch`` wrapper that, at every UNet call, collects the V* prompts of
  the call's conditionings (each carries its :class:`~models.sefi.contexts.PromptStages`
  under :data:`~.sefi_text.COND_KEY`, attached by the SeFi CLIP), checks that each
  conditioning tensor still is that prompt's base encoding, works out the stage of the
  call's sigma, and hands both to the attention layers through ``transformer_options``
  (a fresh :class:`SeFiCall` per call, no state kept between calls);
* an ``attn2_patch`` that, in every cross-attention, replaces the key context and the
  value context of those prompts' rows by the stage's key and value encodings.

An ``attn2_patch`` runs before any attn2 replace, so W+ adapter, IPAdapter or InstantID
replaces on the same MODEL (before or after this node) compute their text attention
from the SeFi keys and values; nothing already on the MODEL is mutated.

Learning lives in :mod:`.sefi_train`.
"""

from __future__ import annotations

import logging
from collections import Counter

import comfy.model_patcher
import comfy.patcher_extension
import torch

from ...models.errors import LikenessError
from ...models.sefi.contexts import PromptStages, swap_contexts
from ...models.sefi.stages import NUM_TIMESTEPS, stage_of_sigma
from .sefi_text import COND_KEY
from .sites import attn2_modules

__all__ = ["SeFiCall", "SeFiCondWrapper", "SeFiKVPatch", "apply_sefi", "has_sefi"]

logger = logging.getLogger(__name__)

WRAPPER_KEY = "likeness_sefi"
WRAPPER_TYPE = comfy.patcher_extension.WrappersMP.CALC_COND_BATCH


class SeFiCall:
    """What one UNet call's cross-attentions need: the stage and the V* prompts by conditioning uuid."""

    def __init__(self, stage: int, prompts: dict):
        self.stage, self.prompts = stage, prompts
        self._last: tuple | None = None

    def contexts(self, context: torch.Tensor, value: torch.Tensor, uuids: list) -> tuple[torch.Tensor, torch.Tensor]:
        """The call's key and value contexts; computed once and reused by every site of the call."""
        if self._last is not None and self._last[0] is context and self._last[1] is value:
            return self._last[2], self._last[3]
        chunks = [self.prompts.get(u) for u in uuids]
        keys, values = swap_contexts(context, value, chunks, self.stage)
        self._last = (context, value, keys, values)
        return keys, values


class SeFiCondWrapper:
    """``calc_cond_batch`` wrapper: finds the call's V* prompts and stage, passes a :class:`SeFiCall` on."""

    def __init__(self, schedule_sigmas: torch.Tensor):
        self.schedule_sigmas = schedule_sigmas.detach().float().cpu()
        self._warned: set[int] = set()

    def __call__(self, executor, model, conds, x_in, timestep, model_options):
        prompts = {}
        for cond_list in conds:
            for cond in cond_list or []:
                stages = cond.get(COND_KEY)
                if not isinstance(stages, PromptStages) or "uuid" not in cond:
                    continue
                cross = cond.get("model_conds", {}).get("c_crossattn")
                if cross is not None and stages.matches(cross.cond):
                    prompts[cond["uuid"]] = stages
                elif id(stages) not in self._warned:
                    self._warned.add(id(stages))
                    logger.warning(
                        "Likeness SeFi: a V* conditioning was changed after encoding (concatenated, averaged...); "
                        "its per-stage ID tokens are NOT applied. Apply ID tokens to the final prompt instead."
                    )
        if not prompts:
            return executor(model, conds, x_in, timestep, model_options)
        stage = int(stage_of_sigma(float(timestep.detach().flatten()[0]), self.schedule_sigmas))
        options = dict(model_options)
        options["transformer_options"] = {
            **model_options.get("transformer_options", {}),
            WRAPPER_KEY: SeFiCall(stage, prompts),
        }
        return executor(model, conds, x_in, timestep, options)


class SeFiKVPatch:
    """``attn2_patch``: the V* rows' key and value contexts become the stage's; other rows are untouched."""

    def __init__(self):
        self.hits: Counter = Counter()

    def __call__(self, n, context, value, extra_options):
        call = extra_options.get(WRAPPER_KEY)
        if not isinstance(call, SeFiCall):
            return n, context, value
        block = extra_options.get("block")
        if block is not None:
            self.hits[(block[0], block[1], extra_options.get("block_index", 0))] += 1
        keys, values = call.contexts(context, context if value is None else value, extra_options["uuids"])
        return n, keys, values

    def to(self, device_or_dtype):
        return self

    def models(self) -> list:
        return []


def has_sefi(model: comfy.model_patcher.ModelPatcher) -> bool:
    """Whether ``model`` already has the SeFi patch."""
    return bool(model.get_wrappers(WRAPPER_TYPE, WRAPPER_KEY))


def apply_sefi(model: comfy.model_patcher.ModelPatcher) -> tuple[comfy.model_patcher.ModelPatcher, SeFiKVPatch | None]:
    """A clone of ``model`` that applies the per-stage ID tokens V* conditionings carry.

    Returns ``(clone, patch)``; ``patch`` is None when the MODEL already had it (the clone is
    then returned as it is, so two identities on one MODEL patch it once).

    Raises:
        LikenessError: the MODEL's noise schedule is not a 1000-step discrete one (SD1.x).
    """
    patched = model.clone()
    if has_sefi(model):
        return patched, None
    sampling = model.get_model_object("model_sampling")
    sigmas = getattr(sampling, "sigmas", None)
    if sigmas is None or sigmas.ndim != 1 or sigmas.numel() != NUM_TIMESTEPS:
        raise LikenessError(
            f"SeFi ID tokens need a model with a {NUM_TIMESTEPS}-step discrete noise schedule (SD1.5); this MODEL's "
            f"sampling is {type(sampling).__name__}."
        )
    if not attn2_modules(model):
        raise LikenessError("This MODEL has no cross-attention layers: SeFi ID tokens need an SD1.5 UNet.")
    patch = SeFiKVPatch()
    patched.add_wrapper_with_key(WRAPPER_TYPE, WRAPPER_KEY, SeFiCondWrapper(sigmas))
    patched.set_model_attn2_patch(patch)
    return patched, patch

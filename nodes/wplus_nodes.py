"""W+ adapter nodes: load the official weights, patch a MODEL clone with an identity's W+ code."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..models.errors import InputError
from ..models.files.registry import find_file
from ..models.inversion.codes import WPlusCodes
from ..models.wplus_adapter.model import load_wplus_adapter
from .checks import check_widgets, wplus_in
from .folders import file_choices, search_paths, validate_file
from .patching import LoadedWPlusAdapter, apply_wplus_adapter
from .sockets import WPlus, WPlusAdapterType
from .ui_output import node_ui

logger = logging.getLogger(__name__)

LICENCE_NOTE = "W+ adapter weights: NTU S-Lab License 1.0, NON-COMMERCIAL use only."


class LikenessLoadWPlusAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_LoadWPlusAdapter",
            has_intermediate_output=True,  # its results are shown again when cached
            display_name="Likeness Load W+ Adapter",
            category="likeness/adapter",
            search_aliases=["w+ adapter", "identity", "face id", "wplus", "ip adapter"],
            description=(
                "Loads the official W+ adapter (csxmli2016/w-plus-adapter: wplus_adapter.bin = stage 2, the main "
                f"model; wplus_adapter_stage1.bin = stage 1) from models/wplus. SD1.5 only. {LICENCE_NOTE}"
            ),
            inputs=[
                io.Combo.Input(
                    "adapter_name",
                    options=file_choices("wplus"),
                    tooltip=f"File in models/wplus. {LICENCE_NOTE}",
                ),
            ],
            outputs=[WPlusAdapterType.Output("adapter", tooltip="The loaded adapter, for Apply W+ Adapter.")],
        )

    @classmethod
    def validate_inputs(cls, adapter_name: str) -> bool | str:
        return validate_file("wplus", adapter_name)

    @classmethod
    def execute(cls, adapter_name: str) -> io.NodeOutput:
        path = find_file("wplus", adapter_name, search_paths())
        adapter = load_wplus_adapter(path)
        logger.info("Likeness: loaded W+ adapter %s (%s)", path, adapter.dtype)
        text = f"{adapter_name} ({adapter.dtype}). {LICENCE_NOTE}"
        return io.NodeOutput(LoadedWPlusAdapter.wrap(adapter, adapter_name), ui=node_ui(cls, text))


class LikenessApplyWPlusAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_ApplyWPlusAdapter",
            has_intermediate_output=True,  # its results are shown again when cached
            display_name="Likeness Apply W+ Adapter",
            category="likeness/adapter",
            search_aliases=["w+ adapter", "identity", "face id", "age", "smile", "personalize"],
            description=(
                "Conditions an SD1.5 MODEL on an identity's W+ code: every cross-attention gets the adapter's residual "
                "branch to_out(h_text + weight * h_W+). Returns a patched copy; the input MODEL is never modified. "
                "A W+ batch maps one code per latent (e.g. an attribute sweep). Stacks with IPAdapter-style patches."
            ),
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="An SD1.5 MODEL (or SD1.5 fine-tune). SDXL is refused: no W+ adapter exists for it.",
                ),
                WPlusAdapterType.Input("adapter", tooltip="From Load W+ Adapter."),
                WPlus.Input("wplus", tooltip="W+ code(s): one for the whole batch, or one per latent of the batch."),
                io.Float.Input(
                    "weight",
                    default=1.0,
                    min=-1.0,
                    max=3.0,
                    step=0.05,
                    tooltip="λ (residual_att_scale). Higher = more identity, lower = more text alignment. Official: "
                    "1.0 (stage 2), 0.8 (stage 1).",
                ),
                io.Float.Input(
                    "start_at",
                    default=0.2,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Fraction of the steps run text-only first. 0.2 reproduces the official 20% delay (steps "
                    "0-6 of 30).",
                ),
                io.Float.Input(
                    "end_at",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    advanced=True,
                    tooltip="Fraction of the steps after which W+ stops acting.",
                ),
                io.Mask.Input(
                    "attn_mask",
                    optional=True,
                    tooltip="Optional: W+ acts only where the mask is 1 (resized to each block).",
                ),
            ],
            outputs=[
                io.Model.Output("model", tooltip="The patched MODEL clone."),
                io.String.Output(
                    "warning",
                    tooltip="Empty, or why the MODEL was passed through unpatched (e.g. no face under the "
                    "pass-through policy).",
                ),
            ],
        )

    @classmethod
    def validate_inputs(
        cls, weight: float | None = None, start_at: float | None = None, end_at: float | None = None
    ) -> bool | str:
        checked = check_widgets(cls, weight=weight, start_at=start_at, end_at=end_at)
        if checked is True and start_at is not None and end_at is not None and float(start_at) >= float(end_at):
            return (
                f"Apply W+ Adapter: start_at ({start_at:g}) must be below end_at ({end_at:g}), else the adapter "
                "acts on no step. The official window is start_at 0.2, end_at 1.0."
            )
        return checked

    @classmethod
    def execute(
        cls,
        model,
        adapter: LoadedWPlusAdapter,
        wplus: WPlusCodes,
        weight: float,
        start_at: float,
        end_at: float,
        attn_mask: torch.Tensor | None = None,
    ) -> io.NodeOutput:
        wplus = wplus_in(cls, "wplus", wplus)
        idle = _cannot_act(wplus, weight, attn_mask)
        if idle:  # nothing would change: pass the MODEL through, and say so
            warning = " ".join(["W+ adapter NOT applied:", idle, *wplus.warnings])
            logger.warning("Likeness: %s", warning)
            return io.NodeOutput(model, warning, ui=node_ui(cls, warning=warning))
        present = None
        notes = list(wplus.warnings)
        if wplus.absent:
            present = torch.ones(wplus.batch)
            present[list(wplus.absent)] = 0.0
            notes.append(f"latent(s) {list(wplus.absent)} have no W+ code (no face, pass-through): left unconditioned.")
        patched, _ = apply_wplus_adapter(
            model, adapter, wplus.codes, weight, start_at, end_at, attn_mask, present=present
        )
        warning = " ".join(notes)
        text = f"{wplus.batch} W+ code(s), weight {weight:g}, steps {start_at:g}..{end_at:g}"
        return io.NodeOutput(patched, warning, ui=node_ui(cls, text, warning=warning or None))


def _cannot_act(wplus: WPlusCodes, weight: float, attn_mask: torch.Tensor | None) -> str | None:
    """Why the adapter would change nothing (no code, weight 0, an empty mask), or None."""
    if not wplus.present:
        return "the W+ input holds no code (no face was found in its image)."
    if float(weight) == 0.0:
        return "weight is 0. Raise it (1.0 is the official value for stage 2) or remove the node."
    if attn_mask is not None:
        if not bool(torch.isfinite(attn_mask).all()):
            raise InputError("Apply W+ Adapter input 'attn_mask' holds NaN or infinite values; give a mask in [0, 1].")
        if float(attn_mask.abs().max()) == 0.0:
            return "attn_mask is all zeros, so W+ acts nowhere. Connect the face mask, or remove the mask input."
    return None


WPLUS_NODES = [LikenessLoadWPlusAdapter, LikenessApplyWPlusAdapter]

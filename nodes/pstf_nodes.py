"""InstantID / PSTF-AttControl on SDXL: load the adapter, patch a MODEL clone with an identity (and W+ attributes)."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..models.errors import LikenessError
from ..models.face import apply_policy, create_analyzer, select_batch
from ..models.files.registry import find_file
from ..models.inversion.codes import WPlusCodes
from ..models.pstf.model import load_pstf_adapter
from ..models.pstf.preprocess import identity_embedding
from ..models.pstf.sweep import reference_row as sweep_reference_row
from .checks import check_widgets, wplus_in
from .face_common import DetectedFaces, faces_for
from .folders import file_list, search_paths, validate_file
from .patching import LoadedPSTF, PSTFIdentity, apply_pstf
from .pstf_inputs import face_and_attribute_inputs
from .sockets import PSTFAdapterType, PSTFIdentityType
from .ui_output import node_ui

logger = logging.getLogger(__name__)

FOLDERS = ("instantid", "pstf")
LICENCE_NOTE = (
    "InstantID weights: Apache-2.0 (InstantX/InstantID model card), but they need insightface antelopev2, whose models "
    "are NON-COMMERCIAL research only. PSTF-AttControl: no published weights (code MIT); yours carry their own terms."
)


def _adapter_names() -> list[str]:
    names = [f"{folder}/{name}" for folder in FOLDERS for name in file_list(folder)]
    return names or ["instantid/ip-adapter.bin"]


class LikenessLoadPSTF(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_LoadPSTF",
            display_name="Likeness Load InstantID / PSTF",
            category="likeness/sdxl",
            description=(
                "Loads an SDXL identity adapter: InstantID's ip-adapter.bin (identity only) from models/instantid, or "
                "a PSTF-AttControl pytorch_model.bin (identity + W+ attribute streams) from models/pstf. The file kind "
                f"is read from its keys; other files (IP-Adapter FaceID, ControlNets, the W+ adapter) are named. "
                f"{LICENCE_NOTE}"
            ),
            search_aliases=["instantid", "pstf", "identity adapter", "face id sdxl"],
            inputs=[
                io.Combo.Input(
                    "adapter_name",
                    options=_adapter_names(),
                    tooltip="instantid/<file> from models/instantid or pstf/<file> from models/pstf. " + LICENCE_NOTE,
                ),
            ],
            outputs=[PSTFAdapterType.Output("adapter", tooltip="The loaded adapter, for Apply InstantID / PSTF.")],
        )

    @classmethod
    def validate_inputs(cls, adapter_name: str) -> bool | str:
        folder, _, name = adapter_name.partition("/")
        if folder not in FOLDERS or not name:
            return (
                f"Adapter {adapter_name!r}: choose a file listed as instantid/<file> or pstf/<file> (models/instantid "
                "or models/pstf), then press R to refresh."
            )
        return validate_file(folder, name)

    @classmethod
    def execute(cls, adapter_name: str) -> io.NodeOutput:
        folder, _, name = adapter_name.partition("/")
        adapter = load_pstf_adapter(find_file(folder, name, search_paths()))
        logger.info("Likeness: loaded %s %s (%s)", adapter.kind, adapter_name, adapter.dtype)
        text = f"{adapter.kind} {adapter_name} ({adapter.dtype}). {LICENCE_NOTE}"
        return io.NodeOutput(LoadedPSTF.wrap(adapter, adapter_name), ui=node_ui(cls, text))


def _embeddings(faces: DetectedFaces, on_no_face: str, multi_image: str) -> tuple[torch.Tensor | None, list[str]]:
    """``[K, 512]`` (or ``[1, 512]`` averaged) antelopev2 embeddings of the largest face per image, and notes."""
    chosen, reasons = select_batch(faces.faces, "largest", 0)
    kept, report = apply_policy(
        [c[:1] for c in chosen], on_no_face, faces.sizes, reasons=reasons, where="Apply InstantID / PSTF"
    )
    notes = report.summary().splitlines()[1:]
    vectors = []
    for i in kept:
        emb, note = identity_embedding(chosen[i][0])
        vectors.append(torch.from_numpy(emb))
        notes += [f"image {i}: {note}"] if note else []
    if not vectors:
        return None, notes
    stacked = torch.stack(vectors)
    if multi_image == "average" and stacked.shape[0] > 1:
        notes.append(f"identity: mean of {stacked.shape[0]} embeddings (multi_image = average)")
        stacked = stacked.mean(0, keepdim=True)
    return stacked, notes


class LikenessApplyPSTF(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_ApplyPSTF",
            display_name="Likeness Apply InstantID / PSTF",
            category="likeness/sdxl",
            description=(
                "Conditions an SDXL MODEL on a face: every cross-attention (all 70, middle block included) gets "
                "to_out(A_text + weight * A_identity + wplus_weight * A_W+), the identity from the largest face's "
                "insightface antelopev2 embedding, the attributes from a W+ code (PSTF files only). Returns a patched "
                "copy (the input MODEL is never modified) and the identity tokens for Apply IdentityNet. SD1.5 models "
                "are refused: use the W+ adapter nodes there."
            ),
            search_aliases=["instantid", "pstf", "face id sdxl", "identity"],
            inputs=[
                io.Model.Input("model", tooltip="An SDXL MODEL (or SDXL fine-tune). SD1.5: use Apply W+ Adapter."),
                PSTFAdapterType.Input("adapter", tooltip="From Load InstantID / PSTF."),
                io.Float.Input(
                    "weight",
                    default=0.8,
                    min=0.0,
                    max=3.0,
                    step=0.05,
                    tooltip="Identity strength (ip_adapter_scale): InstantID's demo uses 0.8, PSTF's 1.0. 0 = off.",
                ),
                io.Float.Input(
                    "start_at",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Fraction of the steps before the adapter acts.",
                ),
                io.Float.Input(
                    "end_at",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Fraction of the steps after which it stops.",
                ),
                *face_and_attribute_inputs(),
            ],
            outputs=[
                io.Model.Output("model", tooltip="The patched MODEL clone."),
                PSTFIdentityType.Output(
                    "identity", tooltip="Identity tokens (cond and Resampler(0) uncond) for Apply IdentityNet."
                ),
                io.String.Output(
                    "info",
                    tooltip="Adapter kind, faces used, W+ codes, warnings (e.g. 68-point fallbacks, skipped images).",
                ),
            ],
        )

    @classmethod
    def validate_inputs(
        cls,
        weight: float | None = None,
        start_at: float | None = None,
        end_at: float | None = None,
        wplus_weight: float | None = None,
    ) -> bool | str:
        checked = check_widgets(cls, weight=weight, start_at=start_at, end_at=end_at, wplus_weight=wplus_weight)
        if checked is True and start_at is not None and end_at is not None and float(start_at) >= float(end_at):
            return f"Apply InstantID / PSTF: start_at ({start_at:g}) must be below end_at ({end_at:g})."
        return checked

    @classmethod
    def execute(
        cls,
        model,
        adapter: LoadedPSTF,
        weight: float,
        start_at: float,
        end_at: float,
        faces: DetectedFaces | None = None,
        image: torch.Tensor | None = None,
        face_analyzer=None,
        wplus: WPlusCodes | None = None,
        wplus_weight: float = 0.6,
        attn_mask: torch.Tensor | None = None,
        mask_mode: str = "confine",
        reference_row: int = -1,
        multi_image: str = "average",
        on_no_face: str = "error",
    ) -> io.NodeOutput:
        if faces is None and image is None:
            raise LikenessError(
                "Apply InstantID / PSTF needs a face: connect 'faces' (Detect Faces with the insightface "
                "antelopev2 analyzer) or 'image' (a photo)."
            )
        if faces is None:
            analyzer = face_analyzer or create_analyzer("insightface", search_paths()["insightface"], pack="antelopev2")
            faces = faces_for(image, None, analyzer, "Apply InstantID / PSTF")
        embeddings, notes = _embeddings(faces, on_no_face, multi_image)
        if embeddings is None:
            warning = "InstantID/PSTF NOT applied: no face was found. " + " ".join(notes)
            logger.warning("Likeness: %s", warning)
            empty = PSTFIdentity(None, None, warning)
            return io.NodeOutput(model, empty, warning, ui=node_ui(cls, warning=warning))
        codes = None
        wplus = None if wplus is None else wplus_in(cls, "wplus", wplus)
        if wplus is not None and wplus.present:
            codes = wplus.codes  # an absent item's zeros give Resampler(0), the uncond W+ tokens: no attribute push
            if wplus.absent:
                notes.append(f"W+ items {list(wplus.absent)} hold no code (no face upstream): no attributes there.")
        elif wplus is not None:
            notes.append("W+ input empty (no face upstream): attributes off. " + " ".join(wplus.warnings))
        row = reference_row
        if mask_mode == "hold_background" and row < 0:
            if codes is None:
                raise LikenessError("hold_background needs an attribute sweep on the W+ input (Attribute Sweep).")
            row = sweep_reference_row(wplus.labels)
        patched, _, identity = apply_pstf(
            model,
            adapter,
            embeddings,
            weight,
            start_at,
            end_at,
            wplus=codes,
            weight_wplus=wplus_weight,
            mask=attn_mask,
            mask_mode=mask_mode,
            reference_row=max(row, 0),
        )
        lines = [
            f"{adapter.adapter.kind} ({adapter.name}): identity weight {weight:g}, {embeddings.shape[0]} identity(ies) "
            f"from {faces.backend}",
            "W+: off" if codes is None else f"W+: {codes.shape[0]} code(s), weight {wplus_weight:g}",
            *(
                ["mask: " + mask_mode + (f", reference row {row}" if mask_mode == "hold_background" else "")]
                if attn_mask is not None
                else []
            ),
            *notes,
        ]
        info = "\n".join(lines)
        return io.NodeOutput(patched, identity, info, ui=node_ui(cls, info))


PSTF_NODES = [LikenessLoadPSTF, LikenessApplyPSTF]

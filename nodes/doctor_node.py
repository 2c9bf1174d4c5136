"""``Likeness Doctor``: the ``doctor`` report inside ComfyUI."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..models.files.doctor import format_report
from .folders import search_paths


class LikenessDoctor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Likeness_Doctor",
            display_name="Likeness Doctor",
            category="likeness/utils",
            search_aliases=["missing models", "model files", "diagnose", "setup", "identity"],
            description=(
                "Lists every model file Likeness can use, where it was found (ComfyUI model folders and "
                "extra_model_paths.yaml), which are missing, where to download them and their licences."
            ),
            inputs=[],
            outputs=[io.String.Output("report", tooltip="The report as text (also shown on the node).")],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def fingerprint_inputs(cls) -> float:
        return float("nan")  # files may appear at any time: always re-check

    @classmethod
    def execute(cls) -> io.NodeOutput:
        report = format_report(search_paths())
        return io.NodeOutput(report, ui=ui.PreviewText(report))


DOCTOR_NODES = [LikenessDoctor]

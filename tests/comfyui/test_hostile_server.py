"""Hostile but realistic input, replayed through a real ComfyUI server (issue 17).

Every case ends in a correct result or a clear error: a validation error (HTTP 400) from the node's
``validate_inputs``, or an ``execution_error`` raised by the node itself as a Likeness error, naming the
input and the fix. Never a black image from NaN, an empty batch handed on, or a raw Python exception type.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

OUR_ERRORS = {"LikenessError", "InputError", "CheckpointError", "MissingModelError", "NoFaceError"}
SETS = "encoder4editing/interfacegan"


@dataclass
class Outcome:
    """What the server made of one prompt: the 400 answer, or the history entry."""

    rejected: dict | None = None
    history: dict = field(default_factory=dict)

    def validation_error(self, node_id: str) -> str:
        assert self.rejected is not None, f"the prompt was accepted: {self.history.get('status')}"
        errors = self.rejected["node_errors"][node_id]["errors"]
        assert all(e["type"] == "custom_validation_failed" for e in errors), errors
        return " ".join(e["details"] for e in errors)

    def execution_error(self, node_type: str) -> str:
        assert self.rejected is None, self.rejected
        messages = dict(self.history["status"]["messages"])
        assert "execution_error" in messages, f"the prompt did not fail: {self.history['status']}"
        error = messages["execution_error"]
        assert error["node_type"] == node_type, error
        assert error["exception_type"].rsplit(".", 1)[-1] in OUR_ERRORS, error["exception_type"]
        return error["exception_message"]

    def ui(self, node_id: str) -> dict:
        assert self.rejected is None, self.rejected
        assert self.history["status"]["status_str"] == "success", self.history["status"]
        return self.history["outputs"].get(node_id, {})

    def text(self, node_id: str) -> str:
        return "\n".join(self.ui(node_id).get("text", []))


class Hostile:
    def __init__(self, server):
        self.server = server
        self.client = server.client(timeout=60)
        self.saved = server.base / "output" / "likeness_wplus"
        self.saved.mkdir(parents=True, exist_ok=True)

    def submit(self, prompt: dict, timeout: float = 600) -> Outcome:
        from likeness.tools.batch.client import PromptRejected

        try:
            prompt_id = self.client.queue(prompt)
        except PromptRejected as exc:
            return Outcome(rejected=exc.details)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.client.history_entry(prompt_id)
            status = (entry or {}).get("status", {})
            if status.get("completed") or status.get("status_str") == "error":
                return Outcome(history=entry)
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")

    def wplus_file(self, name: str, codes: torch.Tensor | None = None, metadata: dict | None = None) -> str:
        codes = torch.randn(1, 18, 512).clamp(-3, 3) if codes is None else codes
        save_file({"wplus": codes.contiguous()}, str(self.saved / name), metadata=metadata)
        return name


@pytest.fixture(scope="module")
def hostile(comfy_server, reference_dir):
    inputs = comfy_server.base / "input"
    shutil.copy(reference_dir / "faces" / "astronaut.png", inputs / "likeness_face.png")
    Image.new("RGB", (128, 96), (128, 128, 128)).save(inputs / "likeness_blank.png")
    return Hostile(comfy_server)


def _n(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def _sd15() -> dict:
    from likeness.tools.smoke.writers import SMOKE_CHECKPOINT

    return {
        "ckpt": _n("CheckpointLoaderSimple", ckpt_name=SMOKE_CHECKPOINT),
        "pos": _n("CLIPTextEncode", text="a close-up photo of a face", clip=["ckpt", 1]),
        "neg": _n("CLIPTextEncode", text="lowres", clip=["ckpt", 1]),
    }


def _invert(image: list, on_no_face: str = "error", **kw) -> dict:
    return {
        "e4e": _n("Likeness_LoadE4E", e4e_name="e4e_ffhq_encode.pt", device="cpu", dtype="fp32"),
        "inv": _n(
            "Likeness_InvertFace", e4e=["e4e", 0], image=image, recipe=kw.get("recipe", "e4e_official"),
            whitening=kw.get("whitening", "none"), selection="largest", face_index=0, on_no_face=on_no_face,
            reconstruct=False,
        ),
    }  # fmt: skip


def _refine(image: list, on_no_face: str = "error") -> dict:
    return {
        **_sd15(),
        "refine": _n(
            "Likeness_FaceRefine", image=image, model=["ckpt", 0], vae=["ckpt", 2], positive=["pos", 0],
            negative=["neg", 0], seed=1, steps=1, cfg=1.0, sampler_name="euler", scheduler="normal", denoise=0.6,
            mask_region="face", grow=4, crop_factor=1.5, guide_size=64, max_size=256, feather=6.0,
            noise_mask_feather=8.0, color_match="none", on_no_face=on_no_face,
        ),
        "save": _n("SaveImage", images=["refine", 0], filename_prefix="hostile/refine"),
    }  # fmt: skip


def _edit(wplus_name: str, extra_edits: str = "", strength: float = 1.0) -> dict:
    return {
        "load": _n("Likeness_LoadWPlus", wplus_name=wplus_name),
        "dirs": _n("Likeness_LoadDirections", direction_set=SETS),
        "edit": _n(
            "Likeness_EditAttributes", wplus=["load", 0], directions=["dirs", 0], edits="1",
            **{"edits.attribute_1": "age", "edits.strength_1": strength, "edits.rows_1": "default"},
            extra_edits=extra_edits, ganspace_mode="offset",
        ),
        "save": _n("Likeness_SaveWPlus", wplus=["edit", 0], filename_prefix="hostile/edited"),
    }  # fmt: skip


def _apply(wplus: dict, weight=1.0, start_at=0.2, end_at=1.0, mask: bool = False) -> dict:
    prompt = {
        **_sd15(),
        **wplus,
        "adapter": _n("Likeness_LoadWPlusAdapter", adapter_name="wplus_adapter.bin"),
        "apply": _n(
            "Likeness_ApplyWPlusAdapter", model=["ckpt", 0], adapter=["adapter", 0], wplus=[wplus["__out__"], 0],
            weight=weight, start_at=start_at, end_at=end_at,
        ),
        "show": _n("PreviewAny", source=["apply", 1]),
    }  # fmt: skip
    del prompt["__out__"]
    if mask:
        prompt["mask"] = _n("SolidMask", value=0.0, width=64, height=64)
        prompt["apply"]["inputs"]["attn_mask"] = ["mask", 0]
    return prompt


# ---- 1. W+ values: NaN, inf, x1e30 files; edits and sweeps to 1e300 ---------------------------------------------


@pytest.mark.parametrize(("value", "needle"), [(float("nan"), "1 NaN value"), (float("inf"), "1 infinite value")])
def test_a_w_plus_file_with_nan_or_inf_is_refused_at_load(hostile, value, needle):
    codes = torch.randn(1, 18, 512).clamp(-3, 3)
    codes[0, 4, 100] = value
    name = hostile.wplus_file(f"hostile_{needle.split()[1].lower()}.safetensors", codes)
    out = hostile.submit({"load": _n("Likeness_LoadWPlus", wplus_name=name), **_save_of("load")})
    message = out.execution_error("Likeness_LoadWPlus")
    assert needle in message and name in message and "code 0, row 4, column 100" in message


def _save_of(node: str) -> dict:
    return {"save": _n("Likeness_SaveWPlus", wplus=[node, 0], filename_prefix="hostile/out")}


def test_a_scaled_w_plus_and_an_official_pth_with_nan_are_refused(hostile):
    name = hostile.wplus_file("hostile_1e30.safetensors", torch.randn(1, 18, 512).clamp(-3, 3) * 1e30)
    message = hostile.submit({"load": _n("Likeness_LoadWPlus", wplus_name=name), **_save_of("load")}).execution_error(
        "Likeness_LoadWPlus"
    )
    assert "is beyond ±100" in message and name in message
    official = torch.zeros(1, 18, 512)
    official[0, 0, 0] = float("nan")
    torch.save(official, hostile.saved / "hostile_official.pth")
    out = hostile.submit({"load": _n("Likeness_LoadWPlus", wplus_name="hostile_official.pth"), **_save_of("load")})
    assert "hostile_official.pth" in out.execution_error("Likeness_LoadWPlus")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("age 1e300", "line 1 'age 1e300', strength: 1e+300 is outside -30..30"),
        ("age 1e6", "line 1 'age 1e6', strength: 1e+06 is outside -30..30, the range of the strength sliders"),
        ("age nan", "'nan' is not a finite number"),
        ("age 1 99-200", "'99-200' is not a row between 0 and 17"),
    ],
)
def test_extra_edits_are_checked_with_the_slider_limits_before_the_run(hostile, extra, needle):
    name = hostile.wplus_file("hostile_ok.safetensors")
    details = hostile.submit(_edit(name, extra_edits=extra)).validation_error("edit")
    assert "Edit Attributes input 'extra_edits" in details and needle in details
    assert "100, 101, 102" not in details  # no list of 102 rows


def test_a_nan_slider_strength_is_refused_by_the_node(hostile):
    """ComfyUI's own min/max check lets NaN through (every comparison is false), and it does not hand the slot
    values of a DynamicCombo to validate_inputs: the node refuses it when it runs, before any edit."""
    name = hostile.wplus_file("hostile_ok.safetensors")
    message = hostile.submit(_edit(name, strength=float("nan"))).execution_error("Likeness_EditAttributes")
    assert "Edit Attributes input 'strength_1': 'nan' is not a finite number; give a value in -30..30" in message


@pytest.mark.parametrize(
    ("strengths", "needle"),
    [
        ("-4:1e300:1", "stop: 1e+300 is outside -30..30"),
        ("0:inf:1", "stop: 'inf' is not a finite number"),
        ("0:1e300:1e-300", "stop: 1e+300 is outside -30..30"),  # OverflowError before
        ("0:30:1e-9", "gives more than 256 values"),
    ],
)
def test_sweep_ranges_are_checked_before_the_run(hostile, strengths, needle):
    name = hostile.wplus_file("hostile_ok.safetensors")
    prompt = {
        "load": _n("Likeness_LoadWPlus", wplus_name=name),
        "dirs": _n("Likeness_LoadDirections", direction_set=SETS),
        "sweep": _n(
            "Likeness_AttributeSweep", wplus=["load", 0], directions=["dirs", 0], attribute="age", strengths=strengths,
            rows="default", attribute_b="", strengths_b="-1,0,1", rows_b="default", ganspace_mode="offset",
        ),
        **_save_of("sweep"),
    }  # fmt: skip
    details = hostile.submit(prompt).validation_error("sweep")
    assert f"Attribute Sweep input 'strengths' = '{strengths}'" in details and needle in details


def test_an_edit_within_the_limits_runs_and_gives_finite_codes(hostile):
    name = hostile.wplus_file("hostile_ok.safetensors")
    out = hostile.submit(_edit(name, extra_edits="smile -30 0-7", strength=30.0))
    saved = Path(out.text("save").splitlines()[0].removeprefix("saved "))
    with safe_open(str(saved), framework="pt") as fh:
        codes = fh.get_tensor("wplus")
    assert torch.isfinite(codes).all() and codes.abs().max() < 100


# ---- 2./3./7. empty and odd batches, pass-through vs skip, RGBA ------------------------------------------------


def test_skip_with_no_face_fails_at_face_refine_and_suggests_pass_through(hostile):
    prompt = {"img": _n("LoadImage", image="likeness_blank.png"), **_refine(["img", 0], on_no_face="skip")}
    message = hostile.submit(prompt).execution_error("Likeness_FaceRefine")
    assert "no usable face in any of the 1 image(s)" in message and "Set on_no_face to 'pass-through'" in message


def test_pass_through_with_no_face_returns_the_image_unchanged(hostile):
    prompt = {"img": _n("LoadImage", image="likeness_blank.png"), **_refine(["img", 0], on_no_face="pass-through")}
    out = hostile.submit(prompt)
    (image,) = out.ui("save")["images"]
    pixels = np.asarray(Image.open(hostile.server.base / "output" / image["subfolder"] / image["filename"]))
    assert pixels.shape == (96, 128, 3) and (pixels == 128).all()
    assert "passed through" in out.ui("refine")["likeness_warning"][0]


def test_rgba_is_refined_with_its_alpha_and_inverted_like_rgb(hostile):
    rgba = {
        "img": _n("LoadImage", image="likeness_face.png"),
        "alpha": _n("SolidMask", value=0.25, width=512, height=512),
        "rgba": _n("JoinImageWithAlpha", image=["img", 0], alpha=["alpha", 0]),
    }
    out = hostile.submit({**rgba, **_refine(["rgba", 0])})
    (image,) = out.ui("save")["images"]
    saved = Image.open(hostile.server.base / "output" / image["subfolder"] / image["filename"])
    assert saved.mode == "RGBA" and saved.size == (512, 512)
    assert (np.asarray(saved)[..., 3] == 191).all()  # the alpha (1 - 0.25) comes back untouched
    out = hostile.submit({**rgba, **_invert(["rgba", 0]), **_save_of("inv")})  # Invert Face reads it the same way
    assert "1 code(s): image 0" in out.text("save")


def _mixed_batch() -> dict:
    """Image 0 has a face, image 1 (the grey image, resized to 512 px by ImageBatch) has none."""
    return {
        "face": _n("LoadImage", image="likeness_face.png"),
        "blank": _n("LoadImage", image="likeness_blank.png"),
        "batch": _n("ImageBatch", image1=["face", 0], image2=["blank", 0]),
    }


def test_pass_through_and_skip_differ_on_a_mixed_batch(hostile):
    skip = hostile.submit(_apply({**_mixed_batch(), **_invert(["batch", 0], "skip"), "__out__": "inv"}))
    assert "image 1: skipped" in skip.text("inv") and "1 W+ code(s)" in skip.text("apply")
    passed = hostile.submit(_apply({**_mixed_batch(), **_invert(["batch", 0], "pass-through"), "__out__": "inv"}))
    assert "image 1: passed through" in passed.text("inv") and "2 W+ code(s)" in passed.text("apply")
    assert "latent(s) [1] have no W+ code" in passed.ui("apply")["likeness_warning"][0]
    saved = hostile.submit({**_mixed_batch(), **_invert(["batch", 0], "pass-through"), **_save_of("inv")})
    assert "1 code(s): image 0" in saved.text("save")
    assert "not saved, no code (no face): image 1 (no face)" in saved.ui("save")["likeness_warning"][0]


def test_save_w_plus_after_a_pass_through_with_no_face_writes_nothing(hostile):
    before = set(hostile.saved.rglob("*"))
    blank = {"img": _n("LoadImage", image="likeness_blank.png")}
    out = hostile.submit({**blank, **_invert(["img", 0], "pass-through"), **_save_of("inv")})
    assert "Save W+ input 'wplus': the W+ input holds no code" in out.execution_error("Likeness_SaveWPlus")
    assert set(hostile.saved.rglob("*")) == before  # no [0,18,512] file
    out = hostile.submit({**blank, **_invert(["img", 0], "skip"), **_save_of("inv")})
    assert "Set on_no_face to 'pass-through'" in out.execution_error("Likeness_InvertFace")


def test_the_saved_file_records_the_whitening_actually_used(hostile):
    prompt = {"img": _n("LoadImage", image="likeness_face.png"), **_invert(["img", 0], recipe="wplus_adapter")}
    prompt["inv"]["inputs"]["whitening"] = "auto"
    out = hostile.submit({**prompt, **_save_of("inv")})
    saved = Path(out.text("save").splitlines()[0].removeprefix("saved "))
    with safe_open(str(saved), framework="pt") as fh:
        meta = json.loads(fh.metadata()["meta"])
    assert meta["whitening"] == "landmark_hull"  # the smoke models have no ParseNet; never "auto"


# ---- 4. windows that cannot act ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("start_at", "end_at"), [(0.0, 0.0), (0.9, 0.1), (1.0, 1.0)])
def test_a_window_that_cannot_act_is_refused_before_the_run(hostile, start_at, end_at):
    name = hostile.wplus_file("hostile_ok.safetensors")
    prompt = _apply({"load": _n("Likeness_LoadWPlus", wplus_name=name), "__out__": "load"}, 1.0, start_at, end_at)
    details = hostile.submit(prompt).validation_error("apply")
    assert f"start_at ({start_at:g}) must be below end_at ({end_at:g})" in details


def test_weight_nan_is_refused_and_weight_zero_with_an_empty_mask_is_a_visible_warning(hostile):
    name = hostile.wplus_file("hostile_ok.safetensors")
    load = {"load": _n("Likeness_LoadWPlus", wplus_name=name), "__out__": "load"}
    details = hostile.submit(_apply(dict(load), weight=float("nan"))).validation_error("apply")
    assert "Apply W+ Adapter input 'weight': 'nan' is not a finite number" in details
    out = hostile.submit(_apply(dict(load), weight=0.0, mask=True))
    assert "W+ adapter NOT applied: weight is 0" in out.ui("apply")["likeness_warning"][0]
    out = hostile.submit(_apply(dict(load), weight=1.0, mask=True))
    assert "attn_mask is all zeros" in out.ui("apply")["likeness_warning"][0]


# ---- 5./6. files: metadata fields, save names, folders and broken links ----------------------------------------


@pytest.mark.parametrize(
    ("field_name", "text", "needle"),
    [
        ("labels", "not json", "metadata field 'labels' is not valid JSON"),
        ("labels", "5", "metadata field 'labels' holds an int ('5'), not a JSON list of strings"),
        ("meta", "[1, 2]", "metadata field 'meta' holds a list ('[1, 2]'), not a JSON object"),
    ],
)
def test_bad_metadata_names_the_file_and_the_field(hostile, field_name, text, needle):
    name = hostile.wplus_file(f"hostile_meta_{field_name}_{len(text)}.safetensors", metadata={field_name: text})
    out = hostile.submit({"load": _n("Likeness_LoadWPlus", wplus_name=name), **_save_of("load")})
    message = out.execution_error("Likeness_LoadWPlus")
    assert needle in message and name in message and "Save W+" in message


@pytest.mark.parametrize(("prefix", "stem"), [("x" * 400, "x" * 100), ("bad\x00name/..\x00/id", "bad_name/_/id")])
def test_long_and_nul_save_prefixes_are_sanitised(hostile, prefix, stem):
    name = hostile.wplus_file("hostile_ok.safetensors")
    save = _n("Likeness_SaveWPlus", wplus=["load", 0], filename_prefix=prefix)
    out = hostile.submit({"load": _n("Likeness_LoadWPlus", wplus_name=name), "save": save})
    saved = Path(out.text("save").splitlines()[0].removeprefix("saved "))
    assert saved.is_file() and saved.relative_to(hostile.saved).as_posix().startswith(stem + "_")


def test_a_folder_named_like_the_file_does_not_hide_it_and_a_broken_link_gets_its_own_message(hostile):
    scratch = hostile.server.scratch
    name = hostile.wplus_file("hostile_hidden.safetensors")
    (scratch / "likeness_wplus" / name).mkdir()  # searched before output/likeness_wplus
    (scratch / "e4e" / "e4e_ffhq_encode.pt").mkdir()  # searched before the smoke e4e
    broken = scratch / "likeness_wplus" / "hostile_broken.safetensors"
    broken.symlink_to(scratch / "nowhere.safetensors")
    try:
        load = {"load": _n("Likeness_LoadWPlus", wplus_name=name)}
        e4e = _n("Likeness_LoadE4E", e4e_name="e4e_ffhq_encode.pt", device="cpu", dtype="fp32")
        show = _n("Likeness_PreviewWPlus", e4e=["e4e", 0], wplus=["load", 0], size=64)
        out = hostile.submit({**load, "e4e": e4e, "show": show})
        assert f"file: {name}" in out.text("load") and len(out.ui("show")["images"]) == 1
        out = hostile.submit({"load": _n("Likeness_LoadWPlus", wplus_name=broken.name), **_save_of("load")})
        details = out.validation_error("load")
        assert f"{broken} is a broken symbolic link: it points to {scratch / 'nowhere.safetensors'}" in details
    finally:
        (scratch / "likeness_wplus" / name).rmdir()
        (scratch / "e4e" / "e4e_ffhq_encode.pt").rmdir()
        broken.unlink()


# ---- 9. texts --------------------------------------------------------------------------------------------------


def test_the_no_face_error_says_the_other_backend_once(hostile):
    prompt = {"img": _n("LoadImage", image="likeness_blank.png"), **_invert(["img", 0])}
    message = hostile.submit({**prompt, **_save_of("inv")}).execution_error("Likeness_InvertFace")
    assert "No usable face in batch image 0 (128x96 px)" in message and "the the" not in message


def test_a_wrong_e4e_file_is_not_an_e4e(hostile):
    bad = hostile.server.scratch / "e4e" / "hostile_not_e4e.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "latent_avg": torch.zeros(18, 512)}, bad)
    try:
        name = hostile.wplus_file("hostile_ok.safetensors")
        e4e = _n("Likeness_LoadE4E", e4e_name=bad.name, device="cpu", dtype="fp32")
        prompt = {"load": _n("Likeness_LoadWPlus", wplus_name=name), "e4e": e4e}
        prompt["show"] = _n("Likeness_PreviewWPlus", e4e=["e4e", 0], wplus=["load", 0], size=64)
        message = hostile.submit(prompt).execution_error("Likeness_LoadE4E")
        assert "is not an e4e FFHQ encoder" in message and "a e4e" not in message
    finally:
        bad.unlink()


def test_a_pickled_npy_direction_is_unsafe_not_corrupt_and_is_logged_once(hostile):
    folder = hostile.server.scratch / "likeness_directions" / "hostile"
    folder.mkdir(exist_ok=True)
    evil = folder / "evil.npy"
    np.save(evil, np.array([{"run": "code"}], dtype=object), allow_pickle=True)
    directions = {
        "dirs": _n("Likeness_LoadDirections", direction_set=SETS),
        "show": _n("PreviewAny", source=["dirs", 1]),
    }
    try:
        for _ in range(3):  # UI refreshes: the schema lists the set names
            hostile.client.object_info()
        info = "\n".join(hostile.submit(directions).ui("dirs")["text"])
        assert f"{evil}: Refusing to load" in info and "array of Python objects" in info
        assert "truncated or corrupt" not in info
        np.save(folder / "other.npy", np.zeros((1, 512), np.float32))  # the folder changed: a rescan
        hostile.client.object_info()
        assert "Refusing to load" in "\n".join(hostile.submit(directions).ui("dirs")["text"])
        assert hostile.server.log().count(f"unusable file: Refusing to load {evil}") == 1
    finally:
        shutil.rmtree(folder)

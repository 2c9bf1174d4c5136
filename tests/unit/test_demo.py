"""Fast parts of ``python -m models.cli demo``: argument checks, helpers, smoke detection, the SD1.5 folder checks.

The full pipeline (1.2 GB smoke e4e, full-size encoder/decoder) runs in
tests/reference/test_demo_reference.py.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from likeness.models.errors import LikenessError
from likeness.models.inversion.e4e_model import default_e4e_opts
from likeness.tools.cli import build_parser
from likeness.tools.demo import run as demo_mod
from likeness.tools.demo.run import (
    LABEL_BAND,
    is_smoke_direction,
    is_smoke_e4e,
    load_demo_image,
    run_demo,
    sweep_strip,
)
from likeness.tools.demo.sd15 import check_sd15_diffusers_dir, require_sd15_packages
from likeness.tools.smoke.writers import smoke_direction, write_smoke_models


def _hide(monkeypatch, *names: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a))


def test_sweep_strip_layout():
    imgs = [np.full((32, 32, 3), v, np.uint8) for v in (0, 100, 200)]
    strip = sweep_strip(imgs, ["a=-1.0", "a=+0.0", "a=+1.0"], smoke=True)
    assert strip.size == (96, 32 + LABEL_BAND)
    arr = np.asarray(strip)
    for i, v in enumerate((0, 100, 200)):
        assert (arr[LABEL_BAND:, i * 32 : (i + 1) * 32] == v).all()
    band = arr[:LABEL_BAND]
    assert (band != 255).any(), "labels drawn"
    assert ((band[..., 0] > 150) & (band[..., 1] < 80)).any(), "red smoke label drawn"
    with pytest.raises(ValueError, match="one label per image"):
        sweep_strip(imgs, ["x"])
    with pytest.raises(ValueError, match="all must be"):
        sweep_strip([imgs[0], np.zeros((16, 16, 3), np.uint8)], ["x", "y"])


def test_load_demo_image(tmp_path, monkeypatch):
    path = tmp_path / "face.png"
    Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)).save(path)
    rgb, src = load_demo_image(path)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8 and src == str(path)
    with pytest.raises(LikenessError, match="no such file"):
        load_demo_image(tmp_path / "missing.jpg")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(LikenessError, match="Cannot read"):
        load_demo_image(tmp_path / "bad.png")
    if importlib.util.find_spec("skimage") is not None:
        rgb, src = load_demo_image(None)
        assert rgb.shape == (512, 512, 3) and src == "skimage.data.astronaut()"
    _hide(monkeypatch, "skimage")
    with pytest.raises(LikenessError, match="--image PATH.*pip install scikit-image"):
        load_demo_image(None)


def test_smoke_detection():
    assert is_smoke_e4e(default_e4e_opts())
    assert not is_smoke_e4e({**default_e4e_opts(), "exp_dir": "experiments/ffhq", "device": "cuda:0"})
    for name in ("age", "pose"):
        vec = smoke_direction(name, 2).reshape(-1, 512).expand(18, 512)
        assert is_smoke_direction(name, vec)
        assert not is_smoke_direction(name, vec, seeds=(5,))
    real = torch.nn.functional.normalize(torch.randn(1, 512), dim=1)
    assert not is_smoke_direction("age", real)


def test_write_smoke_models_parts(tmp_path):
    written = write_smoke_models(tmp_path, parts=("directions",))
    assert sorted(p.name for p in written) == ["age.pt", "pose.pt", "smile.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["likeness_directions"]
    assert write_smoke_models(tmp_path, parts=("directions",)) == []  # kept, not rewritten
    with pytest.raises(ValueError, match=r"unknown smoke model part\(s\) \['sd15'\]"):
        write_smoke_models(tmp_path, parts=("sd15",))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"recipe": "ffhq"}, "Unknown alignment recipe 'ffhq'"),
        ({"whitening": "white"}, "Unknown whitening 'white'"),
        ({"strengths": "-3:3:0"}, r"strengths = '-3:3:0': cannot read it"),
        ({"sd15_diffusers": "nowhere/sd15"}, "is not a folder"),
    ],
)
def test_run_demo_rejects_bad_arguments_before_any_work(tmp_path, kwargs, message):
    with pytest.raises(LikenessError, match=message):
        run_demo(None, tmp_path / "models", tmp_path / "out", **kwargs)
    assert not (tmp_path / "models").exists() and not (tmp_path / "out").exists()


def test_sd15_folder_checks(tmp_path, monkeypatch):
    with pytest.raises(LikenessError, match="no model_index.json.*from_single_file"):
        check_sd15_diffusers_dir(tmp_path)
    (tmp_path / "model_index.json").write_text("{}")
    for part in ("unet", "vae", "text_encoder"):
        (tmp_path / part).mkdir()
    with pytest.raises(LikenessError, match=r"missing the pipeline part\(s\) \['tokenizer', 'scheduler'\]"):
        check_sd15_diffusers_dir(tmp_path)
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "scheduler").mkdir()
    assert check_sd15_diffusers_dir(tmp_path) == tmp_path
    _hide(monkeypatch, "transformers")
    with pytest.raises(LikenessError, match=r"\['transformers'\].*pip install transformers"):
        require_sd15_packages()
    with pytest.raises(LikenessError, match="transformers"):
        run_demo(None, tmp_path / "models", tmp_path / "out", sd15_diffusers=tmp_path)
    assert not (tmp_path / "models").exists()


def test_cli_demo_defaults():
    args = build_parser().parse_args(["demo"])
    assert args.func.__name__ == "_cmd_demo"
    assert (args.out, args.attribute, args.strengths, args.recipe, args.whitening) == (
        "output/demo",
        "age",
        "-3:3:3",
        "wplus_adapter",
        "auto",
    )
    assert args.image is None and args.sd15_diffusers is None and not args.full_previews
    assert demo_mod.DIRECTION_SET == "encoder4editing/interfacegan"

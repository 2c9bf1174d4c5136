"""models.finetune.identity_file: atomic identity files, bit-exact round trip, field validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from likeness.models.errors import CheckpointError
from likeness.models.finetune import (
    Provenance,
    image_sha256,
    load_identity_file,
    read_identity_header,
    save_identity_file,
    tensors_sha256,
)
from likeness.models.finetune import identity_file as idf

H = "ab" * 32


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "diffusion_model.a.lora_up.weight": torch.randn(8, 4, generator=g),
        "diffusion_model.a.lora_down.weight": torch.randn(4, 8, generator=g).half(),
        "diffusion_model.a.alpha": torch.tensor(4.0),
        "likeness.facea.face.vectors": torch.randn(3, 768, generator=g).bfloat16(),
    }


def _prov(**kw):
    base = dict(photo_sha256=[H, "cd" * 32], steps=600, base_model_sha256="ef" * 32, extra={"file": "x.safetensors"})
    base.update(kw)
    return Provenance(**base)


def test_round_trip_is_bit_exact_with_meta_and_provenance(tmp_path):
    tensors = _tensors()
    meta = {"class_word": "woman", "tasks": {"face": {"prompt": "a woman face", "start": 4, "count": 4}}}
    path = save_identity_file(
        tmp_path / "sub" / "alice.safetensors", tensors, kind="facea", meta=meta, provenance=_prov()
    )
    assert path == tmp_path / "sub" / "alice.safetensors"
    back, meta2, prov = load_identity_file(path, "facea")
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)
    assert meta2 == meta
    assert prov.photo_sha256 == [H, "cd" * 32] and prov.steps == 600 and prov.extra == {"file": "x.safetensors"}
    assert prov.created_utc.endswith("Z")
    header = read_identity_header(path)
    assert header["format"] == "likeness-identity" and header["format_version"] == "1" and header["kind"] == "facea"
    assert [p.name for p in path.parent.iterdir()] == ["alice.safetensors"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o666 & ~idf._umask()  # not safetensors' 0600


def test_a_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "bob.safetensors"
    save_identity_file(path, _tensors(), kind="facea", meta={}, provenance=_prov())
    before = path.read_bytes()

    def boom(data, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise KeyboardInterrupt  # interruption in the middle of writing

    monkeypatch.setattr(idf, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_identity_file(path, _tensors(), kind="facea", meta={"v": 2}, provenance=_prov())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bob.safetensors"]
    with pytest.raises(KeyboardInterrupt):
        save_identity_file(tmp_path / "new.safetensors", _tensors(), kind="facea", meta={}, provenance=_prov())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bob.safetensors"]


def _write_raw(path, header):
    save_file({"x": torch.zeros(1)}, str(path), metadata=header)
    return path


def _good_header():
    prov = {
        "photo_sha256": [H],
        "steps": 1,
        "base_model_sha256": "",
        "created_utc": "2025-01-01T00:00:00Z",
        "extra": {},
    }
    return {
        "format": "likeness-identity",
        "format_version": "1",
        "kind": "facea",
        "meta": "{}",
        "provenance": json.dumps(prov),
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": None}, "is not a Likeness identity file"),
        ({"format_version": "2"}, "newer Likeness"),
        ({"format_version": "x"}, "'format_version' must be a positive integer"),
        ({"kind": "sefi"}, "holds a 'sefi' identity, not a 'facea' one"),
        ({"meta": "{oops"}, "'meta' is not valid JSON"),
        ({"meta": "[1]"}, "'meta' must be a JSON object"),
        ({"provenance": None}, "'provenance' is missing"),
        ({"provenance.steps": -1}, "'provenance.steps' must be >= 0"),
        ({"provenance.steps": True}, "'provenance.steps' must be int"),
        ({"provenance.photo_sha256": ["nothex"]}, "'provenance.photo_sha256' holds non-sha256"),
        ({"provenance.base_model_sha256": "abc"}, "'provenance.base_model_sha256' is not a sha256"),
        ({"provenance.created_utc": "yesterday"}, "'provenance.created_utc' is not a date"),
        ({"provenance.extra": None}, "'provenance.extra' is missing"),
    ],
)
def test_every_field_is_validated_with_file_and_field_named(tmp_path, change, message):
    header = _good_header()
    prov = json.loads(header["provenance"])
    for key, value in change.items():
        if key.startswith("provenance."):
            name = key.split(".", 1)[1]
            if value is None:
                prov.pop(name)
            else:
                prov[name] = value
        elif value is None:
            header.pop(key)
        else:
            header[key] = value
    if any(k.startswith("provenance.") for k in change):
        header["provenance"] = json.dumps(prov)
    path = _write_raw(tmp_path / "f.safetensors", header)
    with pytest.raises(CheckpointError) as err:
        load_identity_file(path, "facea")
    assert message in str(err.value) and str(path) in str(err.value)


def test_unreadable_and_missing_files_and_bad_arguments(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        load_identity_file(bad, "facea")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_identity_file(tmp_path / "none.safetensors", "facea")
    with pytest.raises(ValueError, match="kind"):
        save_identity_file(tmp_path / "a.safetensors", _tensors(), kind="lora", meta={}, provenance=_prov())
    with pytest.raises(ValueError, match=".safetensors"):
        save_identity_file(tmp_path / "a.pt", _tensors(), kind="facea", meta={}, provenance=_prov())


def test_hashes_are_stable_and_sensitive():
    img = torch.rand(6, 5, 3)
    u8 = np.round(img.numpy() * 255).astype(np.uint8)
    assert image_sha256(img) == image_sha256(u8) == image_sha256(img.double())
    assert image_sha256(img) != image_sha256(img.flip(0))
    assert image_sha256(torch.cat([img, torch.ones(6, 5, 1)], -1)) == image_sha256(img)  # alpha ignored
    with pytest.raises(ValueError, match=r"\[H,W,C>=3\]"):
        image_sha256(torch.rand(2, 6, 5, 3))
    sd = _tensors()
    h = tensors_sha256(sd)
    assert len(h) == 64 and h == tensors_sha256(dict(reversed(list(sd.items()))))
    sd["diffusion_model.a.alpha"] = torch.tensor(4.0).half()
    assert tensors_sha256(sd) != h

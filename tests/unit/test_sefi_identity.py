"""SeFi identity files: bit-exact round trip, validation messages naming the file and the field."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from likeness.models.errors import CheckpointError
from likeness.models.finetune import Provenance, read_identity_header
from likeness.models.sefi.identity import TENSOR_PREFIX, SeFiIdentity
from likeness.models.sefi.tokens import IdTokens


def _identity(dim: int = 768) -> SeFiIdentity:
    g = torch.Generator().manual_seed(0)
    tokens = IdTokens(
        torch.randn(5, dim, generator=g),
        torch.randn(5, dim, generator=g),
        torch.randn(dim, generator=g),
        "person",
        {"training": {"steps": 600, "attention_weight": 0.003}, "prompt": "a photo of the face of V*"},
    )
    provenance = Provenance(["a" * 64], 600, "b" * 64, extra={"base_model": "sd15.safetensors"})
    return SeFiIdentity(tokens, provenance)


def test_round_trip_is_bit_exact_and_records_the_stage_order(tmp_path):
    ident = _identity()
    path = ident.save(tmp_path / "alice.safetensors")
    back = SeFiIdentity.load(path)
    for name in ("keys", "values", "init_embedding"):
        assert torch.equal(getattr(back.tokens, name), getattr(ident.tokens, name))
    assert back.tokens.init_word == "person" and back.tokens.info == ident.tokens.info
    assert back.provenance == ident.provenance and back.text_encoder == "clip_l"
    header = read_identity_header(path)
    assert header["kind"] == "sefi" and header["format"] == "likeness-identity"
    meta = json.loads(header["meta"])
    assert meta["stages"] == 5 and "row 4 = noisy end" in meta["stage_order"] and meta["embedding_dim"] == 768
    assert sorted(load_file(str(path))) == [TENSOR_PREFIX + n for n in ("init_embedding", "keys", "values")]
    assert [p.name for p in tmp_path.iterdir()] == ["alice.safetensors"], "no temporary file is left behind"


def _rewrite(path, tensors=None, meta=None):
    header = read_identity_header(path)
    data = load_file(str(path))
    if tensors is not None:
        data = tensors(data)
    if meta is not None:
        header["meta"] = json.dumps(meta(json.loads(header["meta"])))
    save_file(data, str(path), metadata=header)


def test_damaged_files_name_the_file_and_the_field(tmp_path):
    path = _identity().save(tmp_path / "x.safetensors")
    _rewrite(path, meta=lambda m: {**m, "stages": 10})
    with pytest.raises(CheckpointError, match=r"x\.safetensors: identity field 'meta\.stages' is 10"):
        SeFiIdentity.load(path)
    path = _identity().save(tmp_path / "y.safetensors")
    _rewrite(path, tensors=lambda d: {k: v for k, v in d.items() if not k.endswith("values")})
    with pytest.raises(CheckpointError, match=r"y\.safetensors: .*\['values'\] missing"):
        SeFiIdentity.load(path)
    path = _identity().save(tmp_path / "z.safetensors")
    _rewrite(path, meta=lambda m: {**m, "embedding_dim": 1024})
    with pytest.raises(CheckpointError, match=r"'meta\.embedding_dim' is 1024 but the tensors are 768-d"):
        SeFiIdentity.load(path)
    path = _identity().save(tmp_path / "w.safetensors")
    _rewrite(path, tensors=lambda d: {**d, TENSOR_PREFIX + "keys": torch.zeros(4, 768)})
    with pytest.raises(CheckpointError, match=r"w\.safetensors: ID tokens: 'keys' must be \[5, D\]"):
        SeFiIdentity.load(path)
    path = _identity().save(tmp_path / "m.safetensors")
    _rewrite(path, meta=lambda m: {k: v for k, v in m.items() if k != "init_word"})
    with pytest.raises(CheckpointError, match="'meta.init_word' must be str, got None"):
        SeFiIdentity.load(path)


def test_a_facea_file_is_refused_by_kind(tmp_path):
    from likeness.models.finetune import save_identity_file

    path = save_identity_file(
        tmp_path / "f.safetensors", {"x": torch.zeros(1)}, kind="facea", meta={}, provenance=Provenance([], 0, "")
    )
    with pytest.raises(CheckpointError, match="holds a 'facea' identity, not a 'sefi' one"):
        SeFiIdentity.load(path)

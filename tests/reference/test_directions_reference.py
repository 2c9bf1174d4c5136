"""Direction files as published (../shared/reference/directions) and GANSpace golden parity.

Tolerances: GANSpace delta vs the official w-plus-adapter function, max |diff| <= 1e-6
(observed 0.0); linearity on real latents 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file as load_safetensors

from likeness.models.directions import (
    discover_directions,
    edit,
    ganspace_delta,
    load_directions,
    load_ganspace_configs,
    sweep,
)
from likeness.models.directions.types import LICENCE_E4E, LICENCE_NVIDIA_NC, LICENCE_PRECISECONTROL, LICENCE_SLAB
from likeness.models.errors import CheckpointError
from likeness.models.files.checkpoints import load_file

E4E = "directions/encoder4editing/editings"
WPA = "directions/w-plus-adapter/w_direction"
LATENTS = [f"latents/w-plus-adapter/test_data/e4e/{i}.pth" for i in range(1, 6)] + [
    f"latents/w-plus-adapter/test_data/stage1/{i}.pth" for i in (1, 2)
]


@pytest.fixture(scope="module")
def catalog(reference_dir):
    return discover_directions([reference_dir / "directions"])


@pytest.fixture(scope="module")
def latents(reference_dir):
    return torch.cat([load_file(reference_dir / p).detach().float() for p in LATENTS])  # [7,18,512]


def test_ganspace_golden_parity(reference_dir):
    g = load_safetensors(reference_dir / "golden" / "ganspace_delta_ref.safetensors")
    pca = load_file(reference_dir / E4E / "ganspace_pca" / "ffhq_pca.pt")
    cfg = {c[0]: c for c in load_ganspace_configs(reference_dir / WPA / "gan_space" / "ganspace_configs.csv")}
    w = g["in.w_plus"]
    keys = [k for k in g if k.startswith("out.delta.")]
    assert len(keys) == 3
    for key in keys:
        name, strength = key[len("out.delta.") :].split(".", 1)
        _, idx, start, end, _ = cfg[name]
        delta = ganspace_delta(w, pca, idx, start, end, float(strength))
        assert delta.shape == (1, 18, 512)
        assert (delta - g[key]).abs().max().item() <= 1e-6, key


def test_ganspace_set_mode_edit_matches_golden(reference_dir, catalog):
    g = load_safetensors(reference_dir / "golden" / "ganspace_delta_ref.safetensors")
    ds = catalog.sets["w-plus-adapter/ganspace"]
    assert len(ds) == 42 and ds["smile"].default_rows == (4,) and ds["overexposed"].default_rows == tuple(range(8, 18))
    out = edit(g["in.w_plus"], [(ds["lipstick"], 4.0)], ganspace_mode="set")
    torch.testing.assert_close(out - g["in.w_plus"], g["out.delta.lipstick.4.0"], rtol=0, atol=1e-6)


def test_discovered_sets_semantics_and_licences(catalog):
    sets = catalog.sets
    assert set(sets) == {
        "encoder4editing/interfacegan", "encoder4editing/ganspace", "w-plus-adapter/ganspace",
        "w-plus-adapter/latent_directions", "w-plus-adapter/training_bank", "PreciseControl",
    }  # fmt: skip
    ig = sets["encoder4editing/interfacegan"]
    assert ig.names() == ["age", "pose", "smile"] and ig.licence == LICENCE_E4E
    for d in ig.directions.values():
        assert d.kind == "linear" and d.default_rows == tuple(range(18)) and d.recommended_range == (-5.0, 5.0)
        torch.testing.assert_close(d.vector.norm(dim=1), torch.ones(18), rtol=0, atol=1e-5)  # unit rows
    sp = sets["w-plus-adapter/latent_directions"]
    assert len(sp) == 21 and sp.licence == LICENCE_NVIDIA_NC and {"gender", "glasses", "emotion_happy"} <= set(sp)
    assert all(d.default_rows == tuple(range(8)) for d in sp.directions.values())
    pc = sets["PreciseControl"]
    assert len(pc) == 20 and pc.licence == LICENCE_PRECISECONTROL and "suprise" in pc
    assert pc["pose"].vector.norm(dim=1).std() > 0  # per-layer rows differ
    bank = sets["w-plus-adapter/training_bank"]
    assert len(bank) == 17 and bank.licence == LICENCE_SLAB
    # bank order identified by cosine 1.0 with the published directions
    cos = torch.nn.functional.cosine_similarity(bank["e4e_pose"].vector, ig["pose"].vector, dim=1)
    assert cos.min() > 0.9999
    cos = torch.nn.functional.cosine_similarity(bank["gender"].vector, sp["gender"].vector, dim=1)
    assert cos.min() > 0.9999
    gs = sets["w-plus-adapter/ganspace"]
    assert LICENCE_SLAB in gs.licence and LICENCE_E4E in gs.licence
    assert sets["encoder4editing/ganspace"].names() == [
        "eye_openness",
        "smile",
        "trimmed_beard",
        "white_hair",
        "lipstick",
    ]


def test_refused_files_listed_with_reasons(reference_dir, catalog):
    by_name = {p.path.name: p.reason for p in catalog.problems}
    boundaries = sorted((reference_dir / "directions" / "interfacegan" / "boundaries").glob("*.npy"))
    assert len(boundaries) == 39 and all(b.name in by_name for b in boundaries)
    assert "cars_pca.pt" in by_name and "not for faces" in by_name["cars_pca.pt"]
    assert len(catalog.problems) == 40
    with pytest.raises(CheckpointError, match="StyleGAN v1 / PGGAN Z or W space.*meaningless"):
        load_directions(boundaries[0])
    with pytest.raises(CheckpointError, match="cars"):
        load_directions(reference_dir / E4E / "ganspace_pca" / "cars_pca.pt")


def test_explicit_loads_of_single_files(reference_dir):
    pose = load_directions(reference_dir / E4E / "interfacegan_directions" / "pose.pt")["pose"]  # saved on cuda:0
    age = load_directions(reference_dir / E4E / "interfacegan_directions" / "age.pt")["age"]
    assert pose.vector.device.type == "cpu" and torch.equal(age.vector[0], age.vector[17])
    glasses = load_directions(reference_dir / WPA / "latent_directions" / "glasses.npy")["glasses"]
    assert glasses.vector.dtype == torch.float32 and glasses.default_rows == tuple(range(8))


def test_real_latents_zero_identity_and_linearity(latents, catalog):
    dirs = [
        catalog.get("encoder4editing/interfacegan:age"),
        catalog.get("w-plus-adapter/latent_directions:smile"),
        catalog.get("PreciseControl:eyeglasses"),
        catalog.get("w-plus-adapter/ganspace:lipstick"),
    ]
    w = latents
    assert torch.equal(edit(w, [(d, 0.0) for d in dirs]), w)
    for d in dirs:
        one = edit(w, [(d, 1.0)]) - w
        for s in (-3.0, 2.5):
            torch.testing.assert_close(edit(w, [(d, s)]) - w, s * one, rtol=1e-4, atol=1e-5)
        untouched = [r for r in range(18) if r not in d.default_rows]
        assert torch.equal(edit(w, [(d, 2.0)])[:, untouched], w[:, untouched])
    # seeprettyface rule as in w-plus-adapter: w[:, :8] = (w0 + s*d)[:, :8], float64 direction
    import numpy as np

    s = -2.0
    raw = torch.from_numpy(np.load(dirs[1].source))
    ref = w.double().clone()
    ref[:, :8] = (w.double() + s * raw)[:, :8]
    torch.testing.assert_close(edit(w, [(dirs[1], s)]).double(), ref, rtol=0, atol=1e-5)
    res = sweep(w[:2], dirs[0], "-4:4:4")
    assert res.wplus.shape == (6, 18, 512) and res.labels[0] == "age=-4.0 #0"


def test_layout_predicts_the_set_names_of_the_published_files(catalog, reference_dir):
    from likeness.models.directions.index import layout_set_names

    assert layout_set_names([reference_dir / "directions"]) == list(catalog.sets)

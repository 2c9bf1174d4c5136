"""Direction formats, discovery and the W+ edit maths, on synthetic files (no reference data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from likeness.models.directions import (
    Direction,
    Edit,
    discover_directions,
    discovery,
    edit,
    format_strength,
    ganspace_delta,
    grid_sweep,
    index,
    load_directions,
    load_ganspace_configs,
    mix,
    orthogonalize,
    parse_strengths,
    resolve_rows,
    rows_to_str,
    save_direction,
    sweep,
)
from likeness.models.directions.index import cached_catalog, folder_signature, layout_set_names, set_names
from likeness.models.directions.types import LICENCE_E4E, LICENCE_NVIDIA_NC, LICENCE_SLAB, LICENCE_UNKNOWN
from likeness.models.errors import CheckpointError, LikenessError


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _w(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 18, 512, generator=_g(seed)) + 0.5


def _pca(k: int = 8, seed: int = 1) -> dict[str, torch.Tensor]:
    q, _ = torch.linalg.qr(torch.randn(512, k, generator=_g(seed)))
    return {"mean": torch.randn(1, 512, generator=_g(seed + 1)), "comp": q.T.reshape(k, 1, 512).contiguous(),
            "std": torch.rand(k, generator=_g(seed + 2)) + 0.5}  # fmt: skip


def _lin(name: str = "d", seed: int = 3, rows=tuple(range(18))) -> Direction:
    return Direction(name=name, vector=torch.randn(18, 512, generator=_g(seed)), default_rows=tuple(rows))


# ---------------------------------------------------------------- loaders


def test_interfacegan_normal_broadcasts_to_all_rows(tmp_path):
    v = torch.randn(1, 512, generator=_g(0))
    torch.save(v, tmp_path / "age.pt")
    ds = load_directions(tmp_path / "age.pt")
    d = ds["age"]
    assert d.kind == "linear" and d.default_rows == tuple(range(18)) and d.recommended_range == (-5.0, 5.0)
    assert torch.equal(d.vector, v.repeat(18, 1))


@pytest.mark.parametrize("shape", [(18, 512), (1, 18, 512)])
def test_rowwise_tensor_keeps_rows(tmp_path, shape):
    v = torch.randn(*shape, generator=_g(1))
    torch.save(v, tmp_path / "pose.pth")
    d = load_directions(tmp_path / "pose.pth")["pose"]
    assert torch.equal(d.vector, v.reshape(18, 512)) and d.default_rows == tuple(range(18))


def test_seeprettyface_npy_defaults_to_rows_0_7(tmp_path):
    v = np.tile(np.random.default_rng(0).standard_normal((1, 512)), (18, 1))  # float64, identical rows
    np.save(tmp_path / "gender.npy", v)
    d = load_directions(tmp_path / "gender.npy")["gender"]
    assert d.vector.dtype == torch.float32 and d.default_rows == tuple(range(8)) and d.recommended_range == (-4.0, 4.0)
    torch.testing.assert_close(d.vector, torch.from_numpy(v).float(), rtol=0, atol=0)
    w = _w(1)
    out = edit(w, [(d, 2.0)])
    assert torch.equal(out[:, 8:], w[:, 8:])
    torch.testing.assert_close(out[:, :8], w[:, :8] + 2.0 * d.vector[:8])


def test_precisecontrol_json(tmp_path):
    rng = np.random.default_rng(0)
    data = {"smile": rng.standard_normal((18, 512)).tolist(), "pose": rng.standard_normal((18, 512)).tolist()}
    (tmp_path / "deltas.json").write_text(json.dumps(data))
    ds = load_directions(tmp_path / "deltas.json")
    assert ds.names() == ["smile", "pose"] and ds["pose"].recommended_range == (-3.0, 3.0)
    torch.testing.assert_close(ds["smile"].vector, torch.tensor(data["smile"], dtype=torch.float32))


def test_training_bank_names(tmp_path):
    bank = [torch.randn(1, 18, 512, generator=_g(i)) for i in range(17)]
    torch.save(bank, tmp_path / "bank.pth")
    ds = load_directions(tmp_path / "bank.pth")
    assert ds.names()[:4] == ["e4e_age", "e4e_pose", "e4e_smile", "age"] and len(ds) == 17
    assert ds["e4e_age"].default_rows == tuple(range(18)) and ds["gender"].default_rows == tuple(range(8))
    torch.save(bank[:3], tmp_path / "small.pth")
    assert load_directions(tmp_path / "small.pth").names() == ["bank_0", "bank_1", "bank_2"]


def test_ganspace_pca_with_configs_and_header(tmp_path):
    pca = _pca()
    torch.save(pca, tmp_path / "pca.pt")
    (tmp_path / "cfg.csv").write_text(
        "name pca_idx start end strength\r\nsmile\t3\t4\t5\t-20\r\nroundness 5 0 5 20\r\n"
    )
    assert load_ganspace_configs(tmp_path / "cfg.csv") == [("smile", 3, 4, 5, -20.0), ("roundness", 5, 0, 5, 20.0)]
    ds = load_directions(tmp_path / "cfg.csv", pca=tmp_path / "pca.pt")
    d = ds["smile"]
    assert d.kind == "ganspace" and d.default_rows == (4,) and d.recommended_range == (-20.0, 20.0)
    # offset-mode vector points towards the published edit (sign of the config strength)
    torch.testing.assert_close(d.vector[0], -pca["comp"][3, 0] * pca["std"][3])
    assert ds.files[0].name == "cfg.csv"
    # a configs file alone needs the PCA
    with pytest.raises(LikenessError, match="needs the matching PCA"):
        load_directions(tmp_path / "cfg.csv")


def test_pca_alone_uses_e4e_demo_configs(tmp_path):
    torch.save(_pca(k=80), tmp_path / "ffhq_pca.pt")
    ds = load_directions(tmp_path / "ffhq_pca.pt")
    assert ds.names() == ["eye_openness", "smile", "trimmed_beard", "white_hair", "lipstick"]
    assert ds["white_hair"].default_rows == (7, 8, 9)


def test_ganspace_config_index_out_of_range(tmp_path):
    torch.save(_pca(k=8), tmp_path / "pca.pt")
    (tmp_path / "cfg.txt").write_text("bad 30 0 5 20\n")
    with pytest.raises(CheckpointError, match="component 30.*has 8"):
        load_directions(tmp_path / "pca.pt", configs=tmp_path / "cfg.txt")


def test_own_format_round_trip_linear_and_ganspace(tmp_path):
    d = Direction(name="age", vector=torch.randn(18, 512, generator=_g(5)), default_rows=(0, 1, 2, 3, 8),
                  recommended_range=(-2.5, 3.0), source="unit test", licence="CC0", note="n")  # fmt: skip
    save_direction(tmp_path / "weird_name.bin", d)  # content decides, not the suffix
    back = load_directions(tmp_path / "weird_name.bin")["age"]
    assert torch.equal(back.vector, d.vector)
    assert (back.default_rows, back.recommended_range, back.licence, back.note) == (
        d.default_rows,
        (-2.5, 3.0),
        "CC0",
        "n",
    )
    torch.save(_pca(), tmp_path / "pca.pt")
    (tmp_path / "c.csv").write_text("smile 2 4 6 -10\n")
    g = load_directions(tmp_path / "pca.pt", configs=tmp_path / "c.csv")["smile"]
    save_direction(tmp_path / "g.safetensors", g)
    g2 = load_directions(tmp_path / "g.safetensors")["smile"]
    assert g2.kind == "ganspace" and (g2.ganspace.pca_idx, g2.ganspace.start, g2.ganspace.end) == (2, 4, 6)
    assert g2.ganspace.config_strength == -10.0 and g2.default_rows == (4, 5)
    w = _w()
    for mode in ("offset", "set"):
        assert torch.equal(edit(w, [(g, 1.5)], ganspace_mode=mode), edit(w, [(g2, 1.5)], ganspace_mode=mode))


def test_own_format_broadcast_and_wrong_space(tmp_path):
    v = torch.randn(1, 512, generator=_g(2))
    save_file({"direction": v}, tmp_path / "a.safetensors", metadata={"name": "x", "rows": "0-7"})
    d = load_directions(tmp_path / "a.safetensors")["x"]
    assert torch.equal(d.vector, v.repeat(18, 1)) and d.default_rows == tuple(range(8)) and d.licence == LICENCE_UNKNOWN
    save_file({"direction": v}, tmp_path / "b.safetensors", metadata={"latent_space": "stylegan1-z"})
    with pytest.raises(CheckpointError, match="b.safetensors.*stylegan1-z"):
        load_directions(tmp_path / "b.safetensors")


def test_genforce_and_cars_refused_by_name(tmp_path):
    np.save(tmp_path / "stylegan_ffhq_age_w_boundary.npy", np.ones((1, 512)) / 512**0.5)
    with pytest.raises(CheckpointError, match="StyleGAN v1 / PGGAN.*meaningless"):
        load_directions(tmp_path / "stylegan_ffhq_age_w_boundary.npy")
    torch.save(_pca(), tmp_path / "cars_pca.pt")
    with pytest.raises(CheckpointError, match="cars"):
        load_directions(tmp_path / "cars_pca.pt")


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda p: p.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8))),
            "not a checkpoint",
        ),
        (lambda p: p.write_text(json.dumps({"smile": [[1.0, 2.0, 3.0]]})), r"\[1, 3\]"),
        (lambda p: torch.save(torch.zeros(3, 7), p), r"\[3, 7\]"),
        (lambda p: torch.save({"state_dict": {"a": torch.zeros(2)}}, p), "state_dict"),
        (lambda p: p.write_text("just some notes\nabout faces\n"), "not a checkpoint"),
    ],
)
def test_garbage_files_name_the_file(tmp_path, make, match):
    path = tmp_path / "garbage_file.pt"
    make(path)
    with pytest.raises(CheckpointError, match=match) as info:
        load_directions(path)
    assert "garbage_file.pt" in str(info.value)


# ---------------------------------------------------------------- discovery


def test_discovery_groups_and_reports_problems(tmp_path):
    root = tmp_path / "likeness_directions"
    _official_layout(root)
    (root / "mine" / "broken.pt").write_bytes(b"\x01\x02garbage")
    cat = discover_directions({"likeness_directions": [root, tmp_path / "missing"]})
    assert set(cat.sets) == {
        "encoder4editing/interfacegan",
        "encoder4editing/ganspace",
        "w-plus-adapter/latent_directions",
        "w-plus-adapter/ganspace",
        "mine/cool",
    }
    assert cat.sets["encoder4editing/interfacegan"].names() == ["age", "smile"]
    assert cat.sets["encoder4editing/interfacegan"].licence == LICENCE_E4E
    assert cat.sets["w-plus-adapter/latent_directions"].licence == LICENCE_NVIDIA_NC
    assert LICENCE_SLAB in cat.sets["w-plus-adapter/ganspace"].licence
    assert cat.sets["mine/cool"].licence == LICENCE_UNKNOWN
    assert cat.get("w-plus-adapter/ganspace:smile").ganspace.pca_idx == 46
    assert "mine/cool:cool" in cat.choices()
    bad = {p.path.name: p.reason for p in cat.problems}
    assert set(bad) == {"broken.pt", "stylegan_ffhq_smile_boundary.npy", "cars_pca.pt"}
    assert "broken.pt" in bad["broken.pt"] and "StyleGAN v1" in bad["stylegan_ffhq_smile_boundary.npy"]
    with pytest.raises(LikenessError, match="nope"):
        cat.get("nope:age")


# ---------------------------------------------------------------- edit maths


def test_rows_presets_and_text():
    assert resolve_rows("coarse") == (0, 1, 2, 3) and resolve_rows("middle") == (4, 5, 6, 7)
    assert resolve_rows("fine") == tuple(range(8, 18)) and resolve_rows("seeprettyface") == tuple(range(8))
    assert resolve_rows("0-3,8, 10-11") == (0, 1, 2, 3, 8, 10, 11) and resolve_rows(slice(2, 5)) == (2, 3, 4)
    assert resolve_rows(None, (5,)) == (5,) and resolve_rows([3, 1, 3]) == (1, 3) and resolve_rows(7) == (7,)
    assert rows_to_str((0, 1, 2, 3, 8, 10, 11)) == "0-3,8,10-11" and rows_to_str(range(18)) == "all"
    for bad, msg in (("18", "between 0 and 17"), ("x-y", "Cannot read"), ("5-2", "backwards"), ([], "empty")):
        with pytest.raises(LikenessError, match=msg):
            resolve_rows(bad)


def test_zero_strength_is_bitwise_identity_and_linear():
    w = _w(3)
    w[0, 0, 0] = -0.0
    d = _lin()
    assert torch.equal(edit(w, [(d, 0.0), (d, 0, "fine")]), w)
    assert edit(w, [(d, 0.0)]) is not w
    d1 = edit(w, [(d, 1.0)]) - w
    for s in (-3.0, 0.5, 2.0):
        torch.testing.assert_close(edit(w, [(d, s)]) - w, s * d1, rtol=1e-5, atol=1e-5)
    # input shapes are preserved
    assert edit(w[0], [(d, 1.0)]).shape == (18, 512) and edit(w[:1], [(d, 1.0)]).shape == (1, 18, 512)
    with pytest.raises(LikenessError, match=r"\[2, 512\]"):
        edit(torch.zeros(2, 512), [(d, 1.0)])


def test_rows_override_and_composition_order():
    w = _w(2)
    a, b = _lin("a", 1), _lin("b", 2, rows=range(4, 8))
    out = edit(w, [Edit(a, 2.0, "coarse"), (b, -1.0)])
    assert torch.equal(out[:, 8:], w[:, 8:])
    torch.testing.assert_close(out[:, :4], w[:, :4] + 2.0 * a.vector[:4])
    torch.testing.assert_close(out[:, 4:8], w[:, 4:8] - b.vector[4:8])
    torch.testing.assert_close(edit(w, [(a, 1.0), (b, 2.0)]), edit(w, [(b, 2.0), (a, 1.0)]), rtol=0, atol=1e-5)
    # GANSpace set mode depends on the current code: order matters and is respected
    g = _gs()
    ab = edit(w, [(a, 1.0, "all"), (g, 2.0)], ganspace_mode="set")
    ba = edit(w, [(g, 2.0), (a, 1.0, "all")], ganspace_mode="set")
    assert not torch.allclose(ab, ba)
    torch.testing.assert_close(ab, edit(edit(w, [(a, 1.0, "all")]), [(g, 2.0)], ganspace_mode="set"))


def _gs() -> Direction:
    from likeness.models.directions import load_ganspace_set

    return load_ganspace_set(_pca(), [("g", 2, 0, 3, -10.0)])["g"]


def test_ganspace_set_and_offset_modes():
    pca, w, g = _pca(), _w(2), _gs()
    comp, std = pca["comp"][2, 0], pca["std"][2]
    delta = ganspace_delta(w, pca, 2, 0, 3, 1.5)
    assert delta.shape == (2, 18, 512) and torch.equal(delta[:, 3:], torch.zeros(2, 15, 512))
    coord = lambda x: ((x[:, 0] - pca["mean"][0]) * comp).sum(-1) / std  # noqa: E731
    torch.testing.assert_close(coord(w + delta), torch.full((2,), 1.5), rtol=0, atol=1e-4)
    torch.testing.assert_close(edit(w, [(g, 1.5)], ganspace_mode="set"), w + delta)
    assert not torch.equal(edit(w, [(g, 0.0)], ganspace_mode="set"), w)  # set mode: 0 is not identity
    off = edit(w, [(g, 1.5)])  # offset mode: moves the coordinate by -1.5 std (config strength is negative)
    torch.testing.assert_close(coord(off) - coord(w), torch.full((2,), -1.5), rtol=0, atol=1e-4)
    assert torch.equal(edit(w, [(g, 0.0)]), w)
    with pytest.raises(LikenessError, match="out of range"):
        ganspace_delta(w, pca, 99, 0, 3, 1.0)
    with pytest.raises(LikenessError, match="ganspace_mode"):
        edit(w, [(g, 1.0)], ganspace_mode="add")


def test_orthogonalize_is_orthogonal_and_idempotent():
    d, a, b = _lin("age", 1), _lin("gender", 2), _lin("glasses", 3)
    c = Direction(name="dup", vector=a.vector.clone())  # collinear with a: must not break
    o = orthogonalize(d, [a, b, c])
    dots = torch.einsum("rc,rc->r", o.vector.double(), a.vector.double()).abs().max()
    dots_b = torch.einsum("rc,rc->r", o.vector.double(), b.vector.double()).abs().max()
    assert dots < 1e-4 and dots_b < 1e-4 and o.kind == "linear" and o.default_rows == d.default_rows
    torch.testing.assert_close(orthogonalize(o, [a, b]).vector, o.vector, rtol=0, atol=1e-5)
    assert not torch.allclose(o.vector, d.vector) and "⟂" in o.name
    assert orthogonalize(d, []) is d


def test_parse_strengths_and_labels():
    assert parse_strengths("-4:4:2") == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert parse_strengths("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_strengths("2:-2:-2") == [2.0, 0.0, -2.0] and parse_strengths("-1:1") == [-1.0, 0.0, 1.0]
    assert parse_strengths("-2, 0,2") == [-2.0, 0.0, 2.0] and parse_strengths(1.5) == [1.5]
    for bad in ("1:2:0", "1:2:-1", "a,b", "", "0:1000:1"):
        with pytest.raises(LikenessError, match="strengths"):
            parse_strengths(bad)
    assert [format_strength(s) for s in (2, -1, 0.25, -0.0)] == ["+2.0", "-1.0", "+0.25", "+0.0"]


def test_sweep_order_and_labels():
    w, d = _w(2), _lin("age")
    res = sweep(w, d, "-2:2:2")
    assert res.wplus.shape == (6, 18, 512)
    assert res.labels == ["age=-2.0 #0", "age=-2.0 #1", "age=+0.0 #0", "age=+0.0 #1", "age=+2.0 #0", "age=+2.0 #1"]
    torch.testing.assert_close(res.wplus[5], edit(w, [(d, 2.0)])[1])
    assert torch.equal(res.wplus[2:4], w)
    assert sweep(w[:1], d, [1.0]).labels == ["age=+1.0"]


def test_grid_sweep_row_major():
    w, a, b = _w(1), _lin("age", 1), _lin("smile", 2)
    res = grid_sweep(w, a, "-1,1", b, "0:2:1")
    assert res.wplus.shape == (6, 18, 512)
    assert res.labels[:4] == [
        "age=-1.0, smile=+0.0",
        "age=-1.0, smile=+1.0",
        "age=-1.0, smile=+2.0",
        "age=+1.0, smile=+0.0",
    ]
    torch.testing.assert_close(res.wplus[4], edit(w, [(a, 1.0), (b, 1.0)])[0])


def test_mix_interpolates_and_copies_rows():
    wa, wb = _w(2, 1), _w(1, 2)
    assert torch.equal(mix(wa, wb, 0.0), wa)
    out = mix(wa, wb, 1.0, rows="middle")
    assert torch.equal(out[:, 4:8], wb[:, 4:8].expand(2, -1, -1)) and torch.equal(out[:, :4], wa[:, :4])
    torch.testing.assert_close(mix(wa, wb, 0.5), (wa + wb) / 2)
    assert mix(wa[0], wb[0], 0.3).shape == (18, 512)
    with pytest.raises(LikenessError, match="batch 3"):
        mix(wa, _w(3), 0.5)


def test_discovery_keeps_same_named_files_apart(tmp_path):
    torch.save(torch.randn(1, 512, generator=_g(0)), tmp_path / "age.pt")
    np.save(tmp_path / "age.npy", np.ones((18, 512)))
    (ds,) = discover_directions([tmp_path]).sets.values()
    assert sorted(ds.names()) == ["age", "age (pt)"]
    assert ds["age"].default_rows == tuple(range(8)) and ds["age (pt)"].default_rows == tuple(range(18))


# ---------------------------------------------------------------- cached catalogue, cheap names


def _official_layout(root: Path) -> None:
    e4e = root / "encoder4editing" / "editings"
    (e4e / "interfacegan_directions").mkdir(parents=True)
    for i, n in enumerate(("age", "smile")):
        torch.save(torch.randn(1, 512, generator=_g(i)), e4e / "interfacegan_directions" / f"{n}.pt")
    (e4e / "ganspace_pca").mkdir()
    torch.save(_pca(k=80), e4e / "ganspace_pca" / "ffhq_pca.pt")
    torch.save(_pca(k=80), e4e / "ganspace_pca" / "cars_pca.pt")
    wpa = root / "w-plus-adapter" / "w_direction"
    (wpa / "latent_directions").mkdir(parents=True)
    np.save(wpa / "latent_directions" / "age.npy", np.ones((18, 512)))
    (wpa / "gan_space").mkdir()
    (wpa / "gan_space" / "ganspace_configs.csv").write_text("smile\t46\t4\t5\t-20\n")
    (root / "mine").mkdir()
    save_direction(root / "mine" / "cool.safetensors", _lin("cool"))
    np.save(root / "mine" / "stylegan_ffhq_smile_boundary.npy", np.zeros((1, 512)))


def test_layout_names_predict_discovery_without_opening_files(tmp_path, monkeypatch):
    root = tmp_path / "likeness_directions"
    _official_layout(root)
    expected = list(discover_directions([root]).sets)

    def no_loading(*args, **kwargs):
        raise AssertionError("a file was opened to list set names")

    monkeypatch.setattr(discovery, "load_file", no_loading)
    assert layout_set_names([root]) == expected
    assert set_names([root, tmp_path / "missing"]) == expected


def test_catalog_is_cached_until_a_file_changes(tmp_path):
    index.clear_cache()
    root = tmp_path / "dirs"
    (root / "set").mkdir(parents=True)
    torch.save(torch.randn(1, 512, generator=_g(0)), root / "set" / "age.pt")
    first = cached_catalog([root])
    assert cached_catalog([root]) is first and set_names([root]) == ["set"]
    sig = folder_signature([root])
    torch.save(torch.randn(1, 512, generator=_g(1)), root / "set" / "smile.pt")
    assert folder_signature([root]) != sig
    second = cached_catalog([root])
    assert second is not first and second.sets["set"].names() == ["age", "smile"]
    (root / "pca_folder").mkdir()
    torch.save(_pca(k=80), root / "pca_folder" / "my_components.pt")  # a PCA the layout cannot name
    assert "pca_folder" in set_names([root])  # predicted (stale cache): a folder of single directions
    assert "pca_folder/my_components" in list(cached_catalog([root]).sets)
    assert "pca_folder/my_components" in set_names([root])  # the real names once read

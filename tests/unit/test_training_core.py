"""Training building blocks: sample order and sharding, checkpoint folders and log, W+ samples and perturbations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from likeness.models.errors import LikenessError
from likeness.models.training.order import PositionSampler, SampleOrder, mix_seed, sample_rng, step_generator
from likeness.models.training.state import (
    TrainLog,
    check_fingerprint,
    find_checkpoints,
    latest_checkpoint,
    load_training_state,
    read_log,
    save_checkpoint,
)


def test_sample_order_is_a_fixed_permutation_per_epoch():
    order = SampleOrder(5, seed=3)
    epoch0 = [order.index(p) for p in range(5)]
    epoch1 = [order.index(p) for p in range(5, 10)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(5)) and epoch0 != epoch1
    assert [SampleOrder(5, 3).index(p) for p in range(7, 2, -1)] == [order.index(p) for p in range(7, 2, -1)]
    assert [SampleOrder(5, 4).index(p) for p in range(5)] != epoch0
    with pytest.raises(ValueError):
        SampleOrder(0, 1)


def test_position_sampler_shards_micro_steps_over_processes():
    ranks = [list(PositionSampler(2, 4, batch=3, world=2, rank=r)) for r in range(2)]
    assert ranks[0] == [12, 13, 14, 18, 19, 20] and ranks[1] == [15, 16, 17, 21, 22, 23]
    assert len(PositionSampler(2, 4, 3, 2, 0)) == 6
    single = list(PositionSampler(0, 4, batch=3, world=1, rank=0))
    assert single == list(range(12))  # one process reads the stream in order


def test_generators_depend_only_on_their_coordinates():
    assert mix_seed(1, 2) == mix_seed(1, 2) != mix_seed(2, 1)
    assert sample_rng(0, 7).random() == sample_rng(0, 7).random() != sample_rng(0, 8).random()
    a = torch.rand(3, generator=step_generator(0, 5, 0, "cpu"))
    assert torch.equal(a, torch.rand(3, generator=step_generator(0, 5, 0, "cpu")))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(0, 5, 1, "cpu")))


def test_checkpoints_are_atomic_pruned_and_checked(tmp_path):
    official = {"w_proj": {"a": torch.ones(2)}}
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, "x.bin", official, {"state": {}}, {"last_epoch": step}, {"seed": 0}, keep=2)
    (tmp_path / "checkpoint-000008.partial").mkdir()  # an interrupted save is not a checkpoint
    (tmp_path / "checkpoint-000009").mkdir()  # nor a folder without files
    assert [s for s, _ in find_checkpoints(tmp_path, "x.bin")] == [4, 6]
    assert latest_checkpoint(tmp_path, "x.bin").name == "checkpoint-000006"
    state = load_training_state(tmp_path / "checkpoint-000006")
    assert state["step"] == 6 and state["scheduler"] == {"last_epoch": 6}
    check_fingerprint({"seed": 0, "data": "a"}, {"seed": 0, "data": "a"}, tmp_path)
    with pytest.raises(LikenessError, match=r"data: saved 'a', now 'b'; seed: saved 0, now 1"):
        check_fingerprint({"seed": 0, "data": "a"}, {"seed": 1, "data": "b"}, tmp_path)
    torch.save({"step": 1}, tmp_path / "checkpoint-000004" / "training_state.pt")
    from likeness.models.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not a Likeness training state"):
        load_training_state(tmp_path / "checkpoint-000004")


def test_train_log_drops_lines_after_the_resumed_step(tmp_path):
    log = TrainLog(tmp_path, 0)
    for step in range(1, 6):
        log.write({"step": step, "loss": float(step)})
    TrainLog(tmp_path, 3)
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3]
    TrainLog(tmp_path, 0)
    assert read_log(tmp_path) == []
    with pytest.raises(LikenessError, match="no training has run"):
        read_log(tmp_path / "nothing")


def test_dropout_rates_match_the_official_five_percent_each():
    from likeness.models.training.wplus_data import draw_drop

    rng = np.random.default_rng(0)
    draws = [draw_drop(rng) for _ in range(20000)]
    w_only = np.mean([d == (True, False) for d in draws])
    t_only = np.mean([d == (False, True) for d in draws])
    both = np.mean([d == (True, True) for d in draws])
    assert abs(w_only - 0.05) < 0.006 and abs(t_only - 0.05) < 0.006 and abs(both - 0.05) < 0.006


@pytest.fixture(scope="module")
def smoke_items(tmp_path_factory):
    pytest.importorskip("diffusers")
    from likeness.models.training.dataset import load_items
    from likeness.models.training.smoke import write_smoke_dataset

    return load_items(write_smoke_dataset(tmp_path_factory.mktemp("d"), "wplus", n=2, size=64), "wplus")


def test_stage_samples(smoke_items):
    from likeness.models.training.wplus_data import FACE_TEMPLATES, stage1_sample, stage2_sample

    item = smoke_items[0]
    s1 = stage1_sample(item, np.random.default_rng(1), 64)
    assert s1["image"].shape == (3, 64, 64) and -1 <= float(s1["image"].min()) and float(s1["image"].max()) <= 1
    assert s1["caption"] in [t.format("face") for t in FACE_TEMPLATES] or s1["caption"] == ""
    masks = []
    for seed in range(6):
        s2 = stage2_sample(item, np.random.default_rng(seed), 64)
        assert s2["image"].shape == (3, 64, 64) and s2["mask"].shape == (1, 64, 64)
        assert 0 <= float(s2["mask"].min()) and float(s2["mask"].max()) <= 1
        assert s2["caption"] in (*item.caption, "")
        assert torch.equal(s2["wplus"], item.tensors["wplus_whitened"]) or not s2["wplus"].any()
        masks.append(s2["mask"])
    assert any(float(m.max()) > 0.2 for m in masks), "the eroded face mask survives the augmentation"
    again = stage2_sample(item, np.random.default_rng(3), 64)
    torch.testing.assert_close(again["image"], stage2_sample(item, np.random.default_rng(3), 64)["image"])


def test_perturbations_cover_every_type_and_keep_dropped_codes_zero(tmp_path):
    from likeness.models.directions.formats import load_directions
    from likeness.models.training.wplus_data import DirectionBank, perturb_wplus

    pytest.importorskip("diffusers")
    from likeness.models.training.smoke import write_smoke_wplus_bank

    bank_file, pca, configs = write_smoke_wplus_bank(tmp_path)
    bank = DirectionBank(tuple(load_directions(bank_file).directions.values()),
                         tuple(load_directions(pca, configs=configs).directions.values()))  # fmt: skip
    assert len(bank.linear) == 17 and len(bank.ganspace) == 3
    w = torch.randn(3, 18, 512)
    w[1] = 0
    drop = torch.tensor([False, True, False])
    diffs = set()
    for seed in range(40):
        neg = perturb_wplus(w, drop, torch.Generator().manual_seed(seed), bank)
        assert neg.shape == w.shape and not neg[1].any() and torch.isfinite(neg).all()
        diffs.add(round(float((neg[0] - w[0]).abs().max()), 3))
    assert len(diffs) > 20
    none = perturb_wplus(w, drop, torch.Generator().manual_seed(0), None)
    assert none.shape == w.shape


def test_dataset_manifest_survives_a_truncated_last_line(tmp_path):
    from likeness.models.training.dataset import ItemRecord, append_record, read_manifest

    append_record(tmp_path, ItemRecord("a", "a.png", "x", "ok"))
    with (tmp_path / "manifest.jsonl").open("a") as fh:
        fh.write('{"id": "b", "sour')
    assert list(read_manifest(tmp_path)) == ["a.png"]
    (tmp_path / "manifest.jsonl").write_text('{"id": 1}\n' + json.dumps(ItemRecord("a", "a.png", "x", "ok").__dict__))
    with pytest.raises(LikenessError, match="line 1 is not a manifest record"):
        read_manifest(tmp_path)


def test_sample_sources_pickle_for_dataloader_workers(smoke_items):
    import pickle

    from likeness.models.training.wplus_data import WPlusSamples

    source = WPlusSamples(smoke_items, 2, 64)
    copy = pickle.loads(pickle.dumps(source))
    a, b = source(1, np.random.default_rng(5)), copy(1, np.random.default_rng(5))
    torch.testing.assert_close(a["image"], b["image"])
    batch = WPlusSamples.collate([a, b])
    assert batch["image"].shape == (2, 3, 64, 64) and batch["drop_w"].dtype == torch.bool

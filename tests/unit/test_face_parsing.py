"""ParseNet layout/loading, background mask, whitening maths and the landmark-hull fallback."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from likeness.models.errors import CheckpointError, LikenessError, MissingModelError
from likeness.models.inversion.whitening import hull_background_mask, whiten_background, whitening_mask
from likeness.models.parsenet import ParseNet, background_mask, build_parsenet_checkpoint, load_parsenet, parse_face

# Derived by hand from chaofengc/PSFRGAN models/networks.py (ParseNet) and models/blocks.py
# (ConvLayer: conv2d + norm.norm; ResidualBlock: shortcut_func / conv1 / conv2) at commit
# 10c4c8c85bc59ff7071ad27f789cf32ea11ed909, with the W+ adapter's arguments
# ParseNet(512, 512, 32, 64, 19, norm_type='bn', relu_type='LeakyReLU', ch_range=[32, 256]):
# 4 down blocks 64->128->256->256->256, 10 body blocks at 256, 4 up blocks 256->256->256->128->64.
EXPECTED_KEYS = {
    "encoder.0.conv2d.weight": (64, 3, 3, 3),
    "encoder.0.conv2d.bias": (64,),
    "encoder.1.shortcut_func.conv2d.weight": (128, 64, 3, 3),
    "encoder.1.shortcut_func.conv2d.bias": (128,),
    "encoder.1.conv1.conv2d.weight": (128, 64, 3, 3),
    "encoder.1.conv1.norm.norm.running_var": (128,),
    "encoder.1.conv2.conv2d.weight": (128, 128, 3, 3),
    "encoder.4.shortcut_func.conv2d.weight": (256, 256, 3, 3),
    "body.0.conv1.conv2d.weight": (256, 256, 3, 3),
    "body.9.conv2.norm.norm.num_batches_tracked": (),
    "decoder.0.shortcut_func.conv2d.weight": (256, 256, 3, 3),
    "decoder.2.conv1.conv2d.weight": (128, 256, 3, 3),
    "decoder.3.conv2.norm.norm.bias": (64,),
    "out_img_conv.conv2d.weight": (3, 64, 3, 3),
    "out_mask_conv.conv2d.weight": (19, 64, 3, 3),
    "out_mask_conv.conv2d.bias": (19,),
}
ABSENT_KEYS = ("body.0.shortcut_func.conv2d.weight", "encoder.1.conv1.conv2d.bias", "encoder.0.norm.norm.weight")
# 2 + 4 x 14 (down) + 10 x 12 (body) + 4 x 14 (up) + 4 (heads), num_batches_tracked included.
EXPECTED_COUNT = 238


def tiny_net() -> ParseNet:
    return ParseNet(in_size=32, out_size=32, min_feat_size=8, base_ch=8, parsing_ch=19, res_depth=1, ch_range=(8, 16))


def test_parsenet_key_names_and_shapes_match_the_official_layout():
    state = ParseNet().state_dict()
    assert len(state) == EXPECTED_COUNT
    for key, shape in EXPECTED_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    for key in ABSENT_KEYS:
        assert key not in state
    assert list(state)[0] == "encoder.0.conv2d.weight" and list(state)[-1] == "out_mask_conv.conv2d.bias"


@pytest.fixture(scope="module")
def synthetic_ckpt(tmp_path_factory) -> tuple:
    state = build_parsenet_checkpoint(seed=3)
    path = tmp_path_factory.mktemp("parse") / "parse_multi_iter_90000.pth"
    torch.save(state, path)
    return path, state


def test_synthetic_checkpoint_loads_strictly(synthetic_ckpt):
    path, state = synthetic_ckpt
    net = load_parsenet(path)
    assert not net.training
    loaded = net.state_dict()
    for key in ("encoder.0.conv2d.weight", "body.4.conv1.norm.norm.running_mean", "out_mask_conv.conv2d.bias"):
        torch.testing.assert_close(loaded[key], state[key])


def test_dataparallel_prefix_and_missing_batch_counters_are_accepted(synthetic_ckpt, tmp_path):
    state = synthetic_ckpt[1]
    wrapped = {"module." + k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "p.pth"
    torch.save(wrapped, path)
    net = load_parsenet(path)
    torch.testing.assert_close(
        net.state_dict()["decoder.1.conv2.conv2d.weight"], state["decoder.1.conv2.conv2d.weight"]
    )


def test_wrong_files_are_refused(synthetic_ckpt, tmp_path):
    state = dict(synthetic_ckpt[1])
    state["out_mask_conv.conv2d.weight"] = torch.zeros(11, 64, 3, 3)  # an 11-class parser
    bad = tmp_path / "other.pth"
    torch.save(state, bad)
    with pytest.raises(
        CheckpointError, match=r"not a PSFRGAN ParseNet.*out_mask_conv.conv2d.weight: file \(11, 64, 3, 3\)"
    ):
        load_parsenet(bad)
    adapter = tmp_path / "adapter.pth"
    torch.save(
        {"image_proj.proj.weight": torch.zeros(4, 4), "ip_adapter.1.to_k_ip.weight": torch.zeros(8, 768)}, adapter
    )
    with pytest.raises(CheckpointError, match="238 missing keys"):
        load_parsenet(adapter)
    with pytest.raises(MissingModelError):
        load_parsenet(tmp_path / "absent.pth")


def test_parse_face_shapes_and_input_checks():
    torch.manual_seed(0)
    net = tiny_net().eval()
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    labels = parse_face(net, img)
    assert labels.shape == (32, 32) and labels.dtype == torch.int64
    assert int(labels.min()) >= 0 and int(labels.max()) < 19
    x = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(parse_face(net, x[None].repeat(2, 1, 1, 1))[1], labels)
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        parse_face(net, torch.zeros(1, 3, 64, 64))


def test_background_mask_is_background_and_cloth():
    labels = torch.arange(19).reshape(1, 19).repeat(2, 1)
    mask = background_mask(labels)
    assert mask.dtype == torch.float32 and mask.shape == labels.shape
    assert torch.nonzero(mask[0]).flatten().tolist() == [0, 18]


def test_whitening_maths():
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    torch.testing.assert_close(whiten_background(x, torch.ones(512, 512)), torch.ones_like(x), rtol=0, atol=0)
    torch.testing.assert_close(whiten_background(x, torch.zeros(512, 512)), x, rtol=0, atol=0)
    mask = torch.zeros(512, 512)
    mask[:, :256] = 1.0  # left half background
    out = whiten_background(x, mask)
    assert torch.equal(out[..., :120], torch.ones_like(out[..., :120]))
    assert torch.equal(out[..., 136:], x[..., 136:])
    edge = out[0, 0, 100, 120:136]
    assert ((edge >= x[0, 0, 100, 120:136] - 1e-6) | (edge >= 1 - 1e-6)).all()
    with pytest.raises(ValueError, match="mask must be"):
        whiten_background(x, torch.zeros(2, 2, 512, 512))


def test_whitening_matches_the_official_cv2_and_pil_steps():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    mask = np.zeros((512, 512), np.uint8)
    mask[rng.integers(0, 512, 4000), rng.integers(0, 512, 4000)] = 255
    mask[:100] = 255
    official = cv2.GaussianBlur(mask, (5, 5), 0)
    official = np.asarray(Image.fromarray(official).resize((256, 256)), dtype=np.float32) / 255.0
    x = torch.zeros(1, 3, 256, 256)
    expected = torch.from_numpy(official)  # x = 0: result is the mask itself
    out = whiten_background(x, torch.from_numpy(mask / 255.0).float())[0, 0]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)  # Pillow itself resizes: identical


def test_hull_mask_sanity():
    spec = importlib.util.spec_from_file_location(
        "test_alignment_helpers", Path(__file__).with_name("test_alignment.py")
    )
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    lm = helpers.synthetic_lm68(256, 220, 110)
    mask = hull_background_mask(lm, 512)
    assert mask.shape == (512, 512) and mask.dtype == torch.float32
    assert mask[220, 256] == 0 and mask[300, 256] == 0  # eyes, nose
    assert mask[220 - 150, 256] == 0  # forehead / hair above the eyes
    assert mask[5, 5] == 1 and mask[505, 5] == 1 and mask[256, 3] == 1
    kps5 = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    ellipse = hull_background_mask(kps5, 512)
    fg_hull, fg_ell = mask == 0, ellipse == 0
    iou = (fg_hull & fg_ell).sum() / (fg_hull | fg_ell).sum()
    assert iou > 0.7, iou
    with pytest.raises(LikenessError, match=r"Landmarks must be .*got \(7, 2\)"):
        hull_background_mask(np.zeros((7, 2)), 64)


def test_whitening_mask_methods():
    img = np.zeros((32, 32, 3), np.uint8)
    assert torch.count_nonzero(whitening_mask("none", img)) == 0
    lm = np.array([[12.0, 12.0], [20.0, 12.0], [16.0, 16.0], [13.0, 20.0], [19.0, 20.0]])
    mask = whitening_mask("landmark_hull", img, landmarks=lm)
    assert mask[14, 16] == 0 and mask[0, 0] == 1
    net = tiny_net().eval()
    mask = whitening_mask("parsenet", img, parsenet=net)
    assert mask.shape == (32, 32) and torch.equal(mask, background_mask(parse_face(net, img)))
    with pytest.raises(ValueError, match="needs the loaded ParseNet"):
        whitening_mask("parsenet", img)
    with pytest.raises(ValueError, match="landmarks"):
        whitening_mask("landmark_hull", img)
    with pytest.raises(ValueError, match="choose one of"):
        whitening_mask("grabcut", img)

"""nodes.finetune_common in real ComfyUI: progress previews, interruption, the identities folder."""

from __future__ import annotations

import pytest
import torch


def test_progress_bar_reports_steps_and_previews_the_loss_curve(comfy_env, monkeypatch):
    import comfy.utils

    from likeness.models.finetune import StepReport
    from likeness.nodes.finetune_common import TrainingProgress

    calls = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda v, t, p, node_id=None: calls.append((v, t, p)))
    progress = TrainingProgress(10, preview_every=4, label="FaceA")
    for i in range(10):
        progress(StepReport(step=i + 1, loss=1.0 / (i + 1), parts={"global": 0.5}))
    previews = [(v, p) for v, _, p in calls if p is not None]
    assert [v for v, _ in previews] == [4, 8, 10]
    fmt, image, size = previews[-1][1]
    assert fmt == "PNG" and image.size == (512, 256) and size == 512
    assert calls[-1][:2] == (10, 10) and progress.losses[-1] == pytest.approx(0.1)


def test_interruption_becomes_comfyuis_own_exception(comfy_env):
    import comfy.model_management as mm

    from likeness.models.finetune import TrainingInterrupted, train_loop
    from likeness.nodes.finetune_common import comfy_interruption, should_stop

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    mm.interrupt_current_processing(True)
    try:
        assert should_stop()
        with pytest.raises(mm.InterruptProcessingException), comfy_interruption():
            train_loop(lambda s, g: {"loss": (p**2).sum()}, opt, 5, seed=0, should_stop=should_stop)
    finally:
        mm.interrupt_current_processing(False)
    assert not should_stop()
    with pytest.raises(TrainingInterrupted), comfy_interruption():  # no ComfyUI interrupt pending: re-raised
        raise TrainingInterrupted("stopped")


def test_identity_folder_is_registered_and_save_paths_never_overwrite(comfy_env, tmp_path, monkeypatch):
    import folder_paths

    from likeness.nodes.finetune_common import (
        IDENTITIES_FOLDER,
        identity_names,
        identity_path,
        identity_save_path,
        loss_curve_tensor,
    )

    assert IDENTITIES_FOLDER in folder_paths.folder_names_and_paths
    assert ".safetensors" in folder_paths.folder_names_and_paths[IDENTITIES_FOLDER][1]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, IDENTITIES_FOLDER, ([str(tmp_path)], {".safetensors"}))
    first = identity_save_path("my face/../x?.safetensors")
    assert first == tmp_path / "x_.safetensors"
    first.write_bytes(b"1")
    assert identity_save_path("x_") == tmp_path / "x__00001.safetensors"
    assert identity_save_path("x_", overwrite=True) == first
    assert identity_save_path("   ") == tmp_path / "identity.safetensors"
    folder_paths.filename_list_cache.pop(IDENTITIES_FOLDER, None)
    assert "x_.safetensors" in identity_names() and identity_path("x_.safetensors") == first
    image = loss_curve_tensor([1.0, 0.5, 0.25])
    assert image.shape == (1, 256, 512, 3) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1

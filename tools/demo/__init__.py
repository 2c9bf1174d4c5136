"""``python -m models.cli demo``: the main job without ComfyUI, offline on a CPU."""

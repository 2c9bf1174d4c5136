"""Developer and batch tooling: never imported by ComfyUI or by ``nodes/``."""

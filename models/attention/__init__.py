"""Attention building blocks shared by every adapter: multi-head attention, step windows, chunk tokens."""

from .schedule import StepWindow, mask_to_token_grid, rows_per_chunk, step_index, tokens_for_chunks
from .sdpa import AttentionFn, match_batch, project, sdpa_attention
from .sites import AttnSite

__all__ = [
    "AttnSite",
    "AttentionFn",
    "sdpa_attention",
    "project",
    "match_batch",
    "StepWindow",
    "step_index",
    "rows_per_chunk",
    "tokens_for_chunks",
    "mask_to_token_grid",
]

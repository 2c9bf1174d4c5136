"""Attribute editing in StyleGAN2-FFHQ W+: the edit maths, in one place, pure torch, batched.

Every published direction format is converted by :mod:`.formats`
into a :class:`Direction` (float32 ``[18, 512]`` offset per unit strength plus
default rows); this module applies them.

Edit rules (docs/design.md, "Attribute edits"), for a W+ batch ``w`` ``[B, 18, 512]`` and rows R:

* linear (InterFaceGAN, seeprettyface, PreciseControl, own files):
  ``w'[:, R] = w[:, R] + s * d[R]``; rows outside R are untouched.
* GANSpace, ``ganspace_mode="offset"`` (default): the same linear rule with
  ``d = sign * comp_k * std_k``, i.e. the PCA coordinate of the edited rows
  moves by ``s`` standard deviations, towards the published edit for ``s > 0``
  (``sign`` = sign of the config's strength column, e.g. -1 for ``smile``).
* GANSpace, ``ganspace_mode="set"`` (official e4e / w-plus-adapter behaviour):
  ``coord = <w[:, 0] - mean, comp_k> / std_k`` (row 0 only) and
  ``w'[:, R] = w[:, R] + (s - coord) * comp_k * std_k``: the coordinate is
  **set** to ``s`` standard deviations with the raw, unsigned ``s``. In this
  mode strength 0 is *not* the identity (it moves the coordinate to 0).

Guarantees: edits are applied in the given order; a strength of exactly 0 is
skipped, so the output is bitwise equal to the input; linear edits are linear
in ``s`` and commute up to float rounding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple, Union

import torch

from ..errors import LikenessError
from ..validation import check_sweep_size, parse_strengths
from .types import (
    LATENT_DIM,
    NUM_ROWS,
    Direction,
    RowsSpec,
    resolve_rows,
)

__all__ = [
    "GANSPACE_MODES",
    "Edit",
    "Sweep",
    "ganspace_delta",
    "edit",
    "edit_delta",
    "orthogonalize",
    "sweep",
    "grid_sweep",
    "parse_strengths",
    "format_strength",
    "mix",
]

logger = logging.getLogger(__name__)

GANSPACE_MODES = ("offset", "set")


class Edit(NamedTuple):
    """One edit: a direction, a strength and an optional row selection (None = the direction's default)."""

    direction: Direction
    strength: float
    rows: RowsSpec = None


EditLike = Union[Edit, tuple]


class Sweep(NamedTuple):
    """A batch of edited W+ codes and one label per batch item."""

    wplus: torch.Tensor
    labels: list[str]


def _as_batch(wplus: torch.Tensor, what: str = "wplus") -> tuple[torch.Tensor, int]:
    """``[18,512]`` / ``[B,18,512]`` -> ``[B,18,512]`` and the original ndim."""
    if not isinstance(wplus, torch.Tensor):
        raise LikenessError(f"{what} must be a torch tensor [B, 18, 512], got {type(wplus).__name__}.")
    if wplus.ndim == 2 and tuple(wplus.shape) == (NUM_ROWS, LATENT_DIM):
        return wplus.unsqueeze(0), 2
    if wplus.ndim == 3 and tuple(wplus.shape[1:]) == (NUM_ROWS, LATENT_DIM):
        return wplus, 3
    raise LikenessError(
        f"{what} must be a W+ code of shape [B, 18, 512] or [18, 512] (StyleGAN2 FFHQ 1024), got {list(wplus.shape)}."
    )


def _restore(w: torch.Tensor, ndim: int) -> torch.Tensor:
    return w[0] if ndim == 2 else w


def _check_pca(pca: Mapping[str, torch.Tensor], pca_idx: int, start: int, end: int) -> None:
    missing = [k for k in ("mean", "comp", "std") if k not in pca]
    if missing:
        raise LikenessError(f"GANSpace PCA dict lacks {missing}; expected keys mean [1,512], comp [K,1,512], std [K].")
    k = int(pca["std"].shape[0])
    if not 0 <= pca_idx < k:
        raise LikenessError(
            f"GANSpace component index {pca_idx} is out of range: the PCA has {k} components (0-{k - 1})."
        )
    if not 0 <= start < end <= NUM_ROWS:
        raise LikenessError(f"GANSpace rows [{start}, {end}) are invalid: need 0 <= start < end <= 18.")


def _ganspace_coord_delta(
    w: torch.Tensor, pca: Mapping[str, torch.Tensor], pca_idx: int, strength: float
) -> torch.Tensor:
    """``(s - coord) * comp_k * std_k`` per batch item, ``[B, 512]``, coord from row 0."""
    mean = pca["mean"].to(w).reshape(LATENT_DIM)
    comp = pca["comp"][pca_idx].to(w).reshape(LATENT_DIM)
    std = pca["std"][pca_idx].to(w)
    coord = torch.sum((w[:, 0, :] - mean) * comp, dim=-1) / std  # [B]
    return (strength - coord)[:, None] * comp * std


def ganspace_delta(
    wplus: torch.Tensor,
    pca: Mapping[str, torch.Tensor],
    pca_idx: int,
    start: int,
    end: int,
    strength: float,
) -> torch.Tensor:
    """The official GANSpace "set coordinate" delta (e4e / w-plus-adapter editing code).

    ``coord_b = <wplus[b, 0] - mean, comp_k> / std_k`` (row 0 only), and
    ``delta[b, r] = (strength - coord_b) * comp_k * std_k`` for ``start <= r < end``,
    zero elsewhere. ``wplus + delta`` has its component-k coordinate set to
    ``strength`` standard deviations on the edited rows.

    Args:
        wplus: absolute W+ ``[B, 18, 512]`` (``[18, 512]`` also accepted).
        pca: the loaded PCA dict ``{"mean": [1,512], "comp": [K,1,512], "std": [K]}``.
        pca_idx: component k.
        start, end: edited rows ``[start, end)``.
        strength: target coordinate in standard deviations (unsigned, as published).

    Returns:
        The delta that the edit adds, same shape, dtype and device as ``wplus``.
    """
    w, ndim = _as_batch(wplus)
    _check_pca(pca, int(pca_idx), int(start), int(end))
    d = _ganspace_coord_delta(w, pca, int(pca_idx), float(strength))
    out = torch.zeros_like(w)
    out[:, int(start) : int(end)] = d[:, None, :]
    return _restore(out, ndim)


def _normalise_edit(item: EditLike) -> Edit:
    if isinstance(item, Edit):
        return item
    if isinstance(item, tuple) and len(item) in (2, 3) and isinstance(item[0], Direction):
        return Edit(*item)
    raise LikenessError(
        f"An edit must be (Direction, strength) or (Direction, strength, rows); got {type(item).__name__} {item!r:.80}."
    )


def _apply_one(w: torch.Tensor, e: Edit, ganspace_mode: str) -> torch.Tensor:
    """One edit on ``w`` ``[B,18,512]``; returns a new tensor (``w`` untouched)."""
    d = e.direction
    s = float(e.strength)
    if not math.isfinite(s):
        raise LikenessError(f"Strength for {d.name!r} must be a finite number, got {e.strength!r}.")
    idx = list(resolve_rows(e.rows, d.default_rows))
    out = w.clone()
    if d.kind == "ganspace" and ganspace_mode == "set":
        g = d.ganspace
        delta = _ganspace_coord_delta(w, g.pca, g.pca_idx, s)  # [B,512]
        out[:, idx] = w[:, idx] + delta[:, None, :]
        return out
    out[:, idx] = w[:, idx] + s * d.vector.to(device=w.device, dtype=w.dtype)[idx]
    return out


def edit(wplus: torch.Tensor, edits: Iterable[EditLike], *, ganspace_mode: str = "offset") -> torch.Tensor:
    """Apply edits to a W+ batch, in order.

    Args:
        wplus: absolute W+ ``[B, 18, 512]``, ``[1, 18, 512]`` or ``[18, 512]``
            (any float dtype/device; directions are cast to match).
        edits: ``(direction, strength)`` or ``(direction, strength, rows)``
            tuples or :class:`Edit`; ``rows`` as in :func:`resolve_rows`.
        ganspace_mode: ``"offset"`` (slider moves the PCA coordinate by
            ``strength`` std, 0 = identity) or ``"set"`` (official: sets it to
            ``strength`` std); linear directions ignore it.

    Returns:
        The edited W+, same shape, dtype and device as ``wplus`` (a new tensor;
        bitwise equal to the input when every strength is 0 in offset mode).
    """
    if ganspace_mode not in GANSPACE_MODES:
        raise LikenessError(f"ganspace_mode must be one of {GANSPACE_MODES}, got {ganspace_mode!r}.")
    w, ndim = _as_batch(wplus)
    out = w.clone()
    for item in edits:
        e = _normalise_edit(item)
        if float(e.strength) == 0.0 and not (e.direction.kind == "ganspace" and ganspace_mode == "set"):
            resolve_rows(e.rows, e.direction.default_rows)  # still report a bad row selection
            continue
        out = _apply_one(out, e, ganspace_mode)
    return _restore(out, ndim)


def edit_delta(wplus: torch.Tensor, edits: Iterable[EditLike], *, ganspace_mode: str = "offset") -> torch.Tensor:
    """``edit(wplus, edits) - wplus``: the total offset the edits add (same shape as ``wplus``)."""
    return edit(wplus, edits, ganspace_mode=ganspace_mode) - wplus


def orthogonalize(
    direction: Direction, against: Sequence[Direction], *, name: str | None = None, eps: float = 1e-8
) -> Direction:
    """Remove from ``direction`` its component along other directions, row by row.

    For each W+ row r, the rows ``a_1[r], ..., a_m[r]`` of ``against`` are
    orthonormalised by Gram-Schmidt (float64; rows with norm below ``eps``
    after projection are dropped, so collinear or zero rows are harmless) into
    ``q_1..q_p``, and ``d'[r] = d[r] - sum_i <d[r], q_i> q_i``. Then
    ``<d'[r], a_j[r]> = 0`` for all j, and orthogonalising again changes
    nothing (idempotent). Example: "age without gender".

    A GANSpace direction becomes linear (its offset vector is orthogonalised;
    set-mode semantics cannot survive a projection). Default rows, range and
    metadata are kept.

    Args:
        direction: the direction to clean.
        against: the directions to be orthogonal to.
        name: new name; default ``"<name> ⟂ <others>"``.
        eps: norm threshold for dropping a dependent row.
    """
    if not against:
        return direction
    d = direction.vector.double().clone()
    basis = torch.stack([a.vector.double() for a in against], dim=1)  # [18, m, 512]
    for r in range(NUM_ROWS):
        qs: list[torch.Tensor] = []
        for j in range(basis.shape[1]):
            v = basis[r, j].clone()
            for _ in range(2):  # re-orthogonalisation pass for numerical stability
                for q in qs:
                    v = v - torch.dot(v, q) * q
            n = torch.linalg.vector_norm(v)
            if n > eps:
                qs.append(v / n)
        for _ in range(2):
            for q in qs:
                d[r] = d[r] - torch.dot(d[r], q) * q
    new_name = name or f"{direction.name} ⟂ {', '.join(a.name for a in against)}"
    return replace(
        direction,
        name=new_name,
        vector=d.float().contiguous(),
        kind="linear",
        ganspace=None,
        note=(direction.note + " " if direction.note else "")
        + f"orthogonalised against {', '.join(a.name for a in against)}",
    )


def format_strength(s: float) -> str:
    """``2`` -> ``"+2.0"``, ``-0.25`` -> ``"-0.25"``, ``0`` -> ``"+0.0"`` (labels)."""
    t = f"{float(s):+.3f}".rstrip("0")
    if t.endswith("."):
        t += "0"
    return "+0.0" if t in ("-0.0", "+0.0") else t


def sweep(
    wplus: torch.Tensor,
    direction: Direction,
    strengths: str | Sequence[float],
    rows: RowsSpec = None,
    *,
    ganspace_mode: str = "offset",
) -> Sweep:
    """Edit every W+ code with every strength.

    Order: strength-major: item ``i * B + b`` is code ``b`` at ``strengths[i]``.
    Labels: ``"age=+2.0"``, with ``" #b"`` appended when ``B > 1``.

    Returns:
        :class:`Sweep` with ``wplus`` ``[len(strengths) * B, 18, 512]``.
    """
    values = parse_strengths(strengths)
    w, _ = _as_batch(wplus)
    batch = w.shape[0]
    check_sweep_size(len(values) * batch, f"sweep of {direction.name!r}")
    outs, labels = [], []
    for s in values:
        outs.append(edit(w, [Edit(direction, s, rows)], ganspace_mode=ganspace_mode))
        for b in range(batch):
            labels.append(f"{direction.name}={format_strength(s)}" + (f" #{b}" if batch > 1 else ""))
    return Sweep(torch.cat(outs, dim=0), labels)


def grid_sweep(
    wplus: torch.Tensor,
    dir_a: Direction,
    strengths_a: str | Sequence[float],
    dir_b: Direction,
    strengths_b: str | Sequence[float],
    rows_a: RowsSpec = None,
    rows_b: RowsSpec = None,
    *,
    ganspace_mode: str = "offset",
) -> Sweep:
    """Two-direction grid: ``a`` outer (grid rows), ``b`` inner (grid columns), batch innermost.

    Item ``(i * len(b) + j) * B + k`` is code ``k`` edited by ``a`` at
    ``strengths_a[i]`` then ``b`` at ``strengths_b[j]``; its label is
    ``"age=+2.0, smile=-1.0"`` (plus ``" #k"`` when ``B > 1``).

    Returns:
        :class:`Sweep` with ``wplus`` ``[len(a) * len(b) * B, 18, 512]``.
    """
    va, vb = parse_strengths(strengths_a), parse_strengths(strengths_b)
    w, _ = _as_batch(wplus)
    batch = w.shape[0]
    check_sweep_size(len(va) * len(vb) * batch, f"grid of {dir_a.name!r} x {dir_b.name!r}")
    outs, labels = [], []
    for sa in va:
        for sb in vb:
            outs.append(edit(w, [Edit(dir_a, sa, rows_a), Edit(dir_b, sb, rows_b)], ganspace_mode=ganspace_mode))
            text = f"{dir_a.name}={format_strength(sa)}, {dir_b.name}={format_strength(sb)}"
            labels.extend(text + (f" #{k}" if batch > 1 else "") for k in range(batch))
    return Sweep(torch.cat(outs, dim=0), labels)


def mix(w_a: torch.Tensor, w_b: torch.Tensor, alpha: float = 1.0, rows: RowsSpec = "all") -> torch.Tensor:
    """Mix two identities in W+: ``w[:, R] = lerp(w_a[:, R], w_b[:, R], alpha)``, other rows from ``w_a``.

    ``alpha=1`` copies the selected rows of ``w_b`` exactly (e.g. ``rows="middle"``
    takes the expression rows 4-7 from another photo); ``alpha=0`` returns
    ``w_a`` unchanged; ``rows="all"`` with ``alpha=0.5`` is the average face.

    Args:
        w_a: base W+ ``[B, 18, 512]`` or ``[18, 512]``.
        w_b: W+ ``[B, 18, 512]``, ``[1, 18, 512]`` or ``[18, 512]`` (broadcast over ``w_a``'s batch).
        alpha: mixing weight (values outside [0, 1] extrapolate).
        rows: rows to mix (:func:`resolve_rows`; default all).

    Returns:
        Same shape, dtype and device as ``w_a``.
    """
    a, ndim = _as_batch(w_a, "w_a")
    b, _ = _as_batch(w_b, "w_b")
    if b.shape[0] not in (1, a.shape[0]):
        raise LikenessError(f"mix: w_b has batch {b.shape[0]} but w_a has batch {a.shape[0]}; use 1 or the same batch.")
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise LikenessError(f"mix: alpha must be a finite number, got {alpha!r}.")
    idx = list(resolve_rows(rows))
    b = b.to(device=a.device, dtype=a.dtype).expand(a.shape[0], -1, -1)
    out = a.clone()
    if alpha == 0.0:
        return _restore(out, ndim)
    if alpha == 1.0:
        out[:, idx] = b[:, idx]
    else:
        out[:, idx] = torch.lerp(a[:, idx], b[:, idx], alpha)
    return _restore(out, ndim)

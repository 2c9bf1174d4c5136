"""SeFi-IDE on ComfyUI's CLIP: the placeholder V* becomes an embedding slot with per-stage encodings.

ComfyUI's conditioning carries only the encoded prompt, never its text, so the
UNet patch cannot find V* by itself. Apply ID Tokens therefore also returns a
CLIP clone whose tokenizer and text encoder are wrapped (on the clone only; the
input CLIP and ComfyUI's shared objects are untouched, and ``CLIP.clone()``
keeps the wrappers):

* the tokenizer isolates V* in the text, tokenises as usual, and replaces each
  occurrence of V*'s token ids by one slot holding a marker vector (see
  :mod:`models.sefi.prompt`);
* the text encoder, when a prompt has slots, encodes it eleven times in one batch
  (base vector; each stage's key token; each stage's value token) and returns the
  base encoding as the conditioning tensor, with the stage encodings attached to
  the conditioning under :data:`COND_KEY` (a
  :class:`models.sefi.contexts.PromptStages`). The SeFi MODEL patch reads them.

Prompts without V* are encoded exactly as by the input CLIP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ...models.errors import LikenessError
from ...models.sefi.contexts import PromptStages
from ...models.sefi.prompt import (
    check_placeholder,
    count_placeholder,
    isolate_placeholder,
    marker_positions,
    replace_spans,
    substitute,
)
from ...models.sefi.stages import NUM_STAGES
from ...models.sefi.tokens import IdTokens

__all__ = [
    "COND_KEY",
    "SeFiEntry",
    "SeFiTokenizer",
    "SeFiTextEncoder",
    "with_id_tokens",
    "sd_tokenizer",
    "word_ids",
    "word_embedding",
    "sd_clip_model",
]

logger = logging.getLogger(__name__)

COND_KEY = "likeness_sefi"
"""Key of the :class:`PromptStages` in a conditioning's dict."""


def sd_tokenizer(tokenizer) -> tuple[object, str]:
    """``(SDTokenizer, token-dict key)`` of an SD1.x CLIP tokenizer (``clip_l``, key ``"l"``)."""
    inner = tokenizer.inner if isinstance(tokenizer, SeFiTokenizer) else tokenizer
    name = getattr(inner, "clip", None)
    sd = getattr(inner, name, None) if isinstance(name, str) else None
    key = getattr(inner, "clip_name", None)
    if sd is None or key is None or not hasattr(sd, "embedding_size"):
        raise LikenessError(
            f"This CLIP ({type(inner).__name__}) is not an SD1.x text encoder. SeFi ID tokens are learned on "
            "and applied to SD1.5's CLIP-L: use the CLIP of an SD1.5 checkpoint."
        )
    return sd, key


def word_ids(clip, word: str) -> list[int]:
    """The token ids of ``word`` tokenised alone by ``clip`` (no start, end or padding tokens)."""
    sd, key = sd_tokenizer(clip.tokenizer)
    plain = clip.tokenizer.inner if isinstance(clip.tokenizer, SeFiTokenizer) else clip.tokenizer
    section = plain.tokenize_with_weights(word)[key][0]
    ids = [int(e[0]) for e in section]
    start = 1 if ids and ids[0] == sd.start_token else 0
    end = ids.index(sd.end_token, start) if sd.end_token in ids[start:] else len(ids)
    out = ids[start:end]
    if not out:
        raise LikenessError(f"{word!r} gives no tokens with this CLIP tokenizer")
    return out


def sd_clip_model(clip):
    """The SD1 text encoder module (``SDClipModel``) inside ``clip``, under any SeFi wrapper."""
    encoder = clip.cond_stage_model
    encoder = encoder.inner if isinstance(encoder, SeFiTextEncoder) else encoder
    return getattr(encoder, encoder.clip)


def word_embedding(clip, word: str) -> torch.Tensor:
    """``[D]`` float32 CPU: the input embedding of a one-token ``word`` (e.g. "person") in ``clip``.

    Raises:
        LikenessError: ``word`` is more than one token.
    """
    ids = word_ids(clip, word)
    if len(ids) != 1:
        raise LikenessError(
            f"The init word {word!r} is {len(ids)} tokens for this CLIP ({ids}); SeFi needs a one-token word such as "
            "'person', 'man' or 'woman'."
        )
    table = sd_clip_model(clip).transformer.get_input_embeddings()
    clip.load_model()
    with torch.no_grad():
        index = torch.tensor([[ids[0]]], device=table.weight.device)
        return table(index, out_dtype=torch.float32)[0, 0].detach().float().cpu()


@dataclass(frozen=True)
class SeFiEntry:
    """One identity on a CLIP: its placeholder, the placeholder's token ids, the (blended) tokens, the marker."""

    placeholder: str
    pattern: tuple[int, ...]
    tokens: IdTokens
    marker: torch.Tensor


class _Wrapper:
    """Delegates every attribute it does not define to the wrapped ComfyUI object."""

    def __init__(self, inner, entries: tuple[SeFiEntry, ...], key: str):
        self.inner, self.entries, self.key = inner, entries, key

    def __getattr__(self, name: str):
        if name in ("inner", "entries", "key"):  # not set yet (copy/pickle): never recurse
            raise AttributeError(name)
        return getattr(self.inner, name)


class SeFiTokenizer(_Wrapper):
    """Wraps an SD1 tokenizer: V* occurrences become one marker slot each."""

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs):
        expected = {}
        for entry in self.entries:
            expected[entry.placeholder] = count_placeholder(text, entry.placeholder)
            text = isolate_placeholder(text, entry.placeholder)
        out = dict(self.inner.tokenize_with_weights(text, return_word_ids, **kwargs))
        sections = out[self.key]
        for entry in self.entries:
            sections, found = replace_spans(sections, entry.pattern, entry.marker)
            if found != expected[entry.placeholder]:
                raise LikenessError(
                    f"The prompt uses {entry.placeholder!r} {expected[entry.placeholder]} time(s) but its tokens "
                    f"{list(entry.pattern)} were found {found} time(s): either an occurrence falls on the 77-token "
                    "boundary of a long prompt (move it, or shorten the text before it), or other words of the "
                    "prompt tokenise like the placeholder (choose a rarer placeholder)."
                )
        out[self.key] = sections
        return out


class SeFiTextEncoder(_Wrapper):
    """Wraps an SD1 text encoder (``CLIP.cond_stage_model``): V* prompts get per-stage encodings."""

    def encode_token_weights(self, token_weight_pairs):
        sections = token_weight_pairs[self.key]
        markers = [e.marker for e in self.entries]
        if not marker_positions(sections, markers):
            return self.inner.encode_token_weights(token_weight_pairs)
        variants = [sections]
        for s in range(NUM_STAGES):
            variants.append(substitute(sections, markers, lambda m, s=s: self.entries[m].tokens.keys[s]))
        for s in range(NUM_STAGES):
            variants.append(substitute(sections, markers, lambda m, s=s: self.entries[m].tokens.values[s]))
        batch = {**token_weight_pairs, self.key: [sec for v in variants for sec in v]}
        out = self.inner.encode_token_weights(batch)
        cond, pooled = out[0], out[1]
        if cond.shape[1] % len(variants):
            raise LikenessError(f"text encoder returned {cond.shape[1]} tokens for {len(variants)} prompt variants")
        parts = cond.split(cond.shape[1] // len(variants), dim=1)
        stages = PromptStages(
            base=parts[0],
            keys=torch.cat(parts[1 : 1 + NUM_STAGES]),
            values=torch.cat(parts[1 + NUM_STAGES :]),
        )
        extra = dict(out[2]) if len(out) > 2 else {}
        extra.pop("attention_mask", None)  # it would describe all eleven variants
        extra[COND_KEY] = stages
        return parts[0], pooled, extra


def with_id_tokens(clip, tokens: IdTokens, placeholder: str, weight: float):
    """A CLIP clone on which ``placeholder`` in a prompt stands for the SeFi identity ``tokens``.

    Args:
        clip: an SD1.x ComfyUI CLIP (may already carry other identities under other placeholders).
        tokens: the learned identity.
        placeholder: the word that marks the identity in prompts (e.g. ``V*``).
        weight: 1 = the identity, 0 = the plain init word ("person"); see :meth:`IdTokens.blended`.

    Raises:
        LikenessError: not an SD1.x CLIP, embedding widths differ, or the placeholder is
            unusable or already taken on this CLIP.
    """
    placeholder = check_placeholder(placeholder)
    sd, key = sd_tokenizer(clip.tokenizer)
    if int(sd.embedding_size) != tokens.dim:
        raise LikenessError(
            f"ID tokens are {tokens.dim}-d but this CLIP's word embeddings are {sd.embedding_size}-d: they were "
            "learned with another text encoder. Use the SD1.5 CLIP they were learned with."
        )
    previous: tuple[SeFiEntry, ...] = ()
    inner_tok, inner_enc = clip.tokenizer, clip.cond_stage_model
    if isinstance(inner_tok, SeFiTokenizer):
        previous, inner_tok = inner_tok.entries, inner_tok.inner
        inner_enc = inner_enc.inner if isinstance(inner_enc, SeFiTextEncoder) else inner_enc
    if any(e.placeholder == placeholder for e in previous):
        raise LikenessError(
            f"This CLIP already carries ID tokens for {placeholder!r}. Give the second identity another placeholder."
        )
    blended = tokens.blended(float(weight))
    entry = SeFiEntry(placeholder, tuple(word_ids(clip, placeholder)), blended, blended.base_vector().clone())
    entries = (*previous, entry)
    out = clip.clone()
    out.tokenizer = SeFiTokenizer(inner_tok, entries, key)
    out.cond_stage_model = SeFiTextEncoder(inner_enc, entries, key)
    logger.info("Likeness SeFi: %r -> ID tokens (weight %.2f), tokens %s", placeholder, weight, list(entry.pattern))
    return out

"""Load ``e4e_ffhq_encode.pt`` and invert aligned faces to absolute W+ codes.

Official layout (omertov/encoder4editing, training/coach.py; see docs/design.md, 'File formats')::

    {"state_dict": {"encoder.*": 621 tensors, "decoder.*": 171 tensors},
     "latent_avg": [18, 512] (also accepted: [512], [1, 18, 512]),
     "opts": plain dict of training options}

Files saved with ``save_training_data`` may also hold ``optimizer``,
``discriminator_state_dict`` etc.; those are ignored. The file is read with
:func:`..files.checkpoints.load_file` (``weights_only=True``, CPU), every key and shape
is validated against the modules built here, and the encoder is loaded
strictly. A file without any ``decoder.*`` key is accepted (inversion works,
previews raise); a partial decoder is refused.

Lazy decoder: the validated ``decoder.*`` sub-dict is **kept on the CPU** (the
tensors read from the file, no copy; about 133 MB in fp32) and the
:class:`~.stylegan2.Generator` is only built from it, strictly, on the first
:meth:`E4EInverter.decode` call. Re-reading the 1.1 GB file instead would make
the first preview slow and fail if the file moved; keeping the sub-dict costs
the decoder's size in host RAM until the first preview, after which the
module owns those tensors.

``opts`` is advisory: the released FFHQ model is always built as
``Encoder4Editing`` with ``stylegan_size`` 1024 and ``start_from_latent_avg``;
other values only produce a logged warning.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..e4e import Encoder4Editing
from ..e4e_fused import FusedE4E, fuse_e4e
from ..errors import CheckpointError, a_or_an
from ..files.checkpoints import flatten, load_file, unflatten_prefix, validate_shapes
from ..stylegan2 import Generator

__all__ = [
    "E4E_WHAT",
    "E4EInverter",
    "load_e4e",
    "e4e_from_checkpoint",
    "expected_e4e_shapes",
    "normalize_latent_avg",
    "build_e4e_checkpoint",
    "default_e4e_opts",
]

logger = logging.getLogger(__name__)

E4E_WHAT = "e4e FFHQ encoder (e4e_ffhq_encode.pt, encoder4editing)"
STYLEGAN_SIZE = 1024
N_LATENT = 18
STYLE_DIM = 512
IMAGE_SIZE = 256
# Top-level keys written by coach.py with save_training_data; not needed for inference.
_IGNORED_TOP = frozenset(
    {
        "opts",
        "optimizer",
        "discriminator_state_dict",
        "discriminator_optimizer_state_dict",
        "global_step",
        "best_val_loss",
    }
)


@functools.lru_cache(maxsize=1)
def _module_shapes() -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    with torch.device("meta"):
        enc = Encoder4Editing(STYLEGAN_SIZE)
        dec = Generator(STYLEGAN_SIZE, STYLE_DIM, 8, channel_multiplier=2)
    return (
        {k: tuple(v.shape) for k, v in enc.state_dict().items()},
        {k: tuple(v.shape) for k, v in dec.state_dict().items()},
    )


def expected_e4e_shapes(decoder: bool = True) -> dict[str, tuple[int, ...]]:
    """Flattened file keys -> shapes of the official file (``latent_avg`` excluded).

    Args:
        decoder: include the 171 ``state_dict.decoder.*`` keys.
    """
    enc, dec = _module_shapes()
    out = {f"state_dict.encoder.{k}": s for k, s in enc.items()}
    if decoder:
        out.update({f"state_dict.decoder.{k}": s for k, s in dec.items()})
    return out


def normalize_latent_avg(latent_avg: Any, source: str | Path = "checkpoint") -> torch.Tensor:
    """``latent_avg`` of shape [512], [18, 512] or [1, 18, 512] -> float32 [18, 512].

    Raises:
        CheckpointError: missing, not a tensor, or another shape.
    """
    if not isinstance(latent_avg, torch.Tensor):
        raise CheckpointError(
            f"{source} has no 'latent_avg' tensor (found {type(latent_avg).__name__}). e4e adds it to every "
            "encoder output; use the released e4e_ffhq_encode.pt, which contains it."
        )
    t = latent_avg.detach().to("cpu", torch.float32)
    shape = tuple(t.shape)
    if shape == (STYLE_DIM,):
        t = t.unsqueeze(0).expand(N_LATENT, STYLE_DIM)
    elif shape == (1, N_LATENT, STYLE_DIM):
        t = t[0]
    elif shape != (N_LATENT, STYLE_DIM):
        raise CheckpointError(
            f"{source}: latent_avg has shape {list(shape)}; expected [512], [18, 512] or [1, 18, 512] "
            "(the FFHQ-1024 e4e model). Use the released e4e_ffhq_encode.pt."
        )
    return t.contiguous()


def _check_opts(opts: Any, source: str | Path) -> dict[str, Any]:
    if opts is None:
        logger.debug("e4e: %s has no 'opts'; using encoder_type=Encoder4Editing, stylegan_size=1024", source)
        return {}
    if not isinstance(opts, Mapping):
        logger.warning("e4e: %s: 'opts' is a %s, not a dict; ignored", source, type(opts).__name__)
        return {}
    opts = dict(opts)
    enc_type = opts.get("encoder_type", "Encoder4Editing")
    if enc_type != "Encoder4Editing":
        logger.warning(
            "e4e: %s says encoder_type=%r; Likeness always builds Encoder4Editing (the keys matched it)",
            source,
            enc_type,
        )
    size = opts.get("stylegan_size", STYLEGAN_SIZE)
    if size != STYLEGAN_SIZE:
        logger.warning("e4e: %s says stylegan_size=%r; Likeness builds the 1024 model (18 W+ rows)", source, size)
    if opts.get("start_from_latent_avg", True) is not True:
        logger.warning(
            "e4e: %s says start_from_latent_avg=%r; latent_avg is added anyway", source, opts["start_from_latent_avg"]
        )
    return opts


def _refuse_non_dict(obj: Any, source: str | Path) -> CheckpointError:
    if isinstance(obj, torch.Tensor):
        what = f"a single tensor of shape {list(obj.shape)}"
        if tuple(obj.shape[-2:]) == (N_LATENT, STYLE_DIM):
            what += " (it looks like a saved W+ latent code, not a model)"
    else:
        what = a_or_an(type(obj).__name__)
    return CheckpointError(
        f"{source} is not {a_or_an(E4E_WHAT)} checkpoint: it holds {what}, not a dict with 'state_dict' and "
        "'latent_avg'. Put the released e4e_ffhq_encode.pt in models/e4e."
    )


def e4e_from_checkpoint(ckpt: Any, source: str | Path = "checkpoint") -> E4EInverter:
    """Validate an already-loaded official checkpoint object and build the inverter.

    Args:
        ckpt: what :func:`..files.checkpoints.load_file` returned for the file.
        source: file name for messages.

    Raises:
        CheckpointError: wrong architecture (naming keys and what the file looks
            like), bad ``latent_avg``, or a partial decoder.
    """
    if not isinstance(ckpt, Mapping):
        raise _refuse_non_dict(ckpt, source)
    flat = flatten({k: v for k, v in ckpt.items() if str(k) not in _IGNORED_TOP and k != "latent_avg"})
    has_decoder = any(k.startswith("state_dict.decoder.") for k in flat)
    validate_shapes(flat, expected_e4e_shapes(decoder=has_decoder), what=E4E_WHAT, source=source)
    latent_avg = normalize_latent_avg(ckpt.get("latent_avg"), source)
    opts = _check_opts(ckpt.get("opts"), source)

    with torch.device("meta"):
        encoder = Encoder4Editing(STYLEGAN_SIZE)
    encoder.load_state_dict(unflatten_prefix(flat, "state_dict.encoder"), strict=True, assign=True)
    encoder.float().eval().requires_grad_(False)
    # BatchNorms folded, style heads stacked (models/e4e_fused.py); the file's tensors are released with `encoder`
    encoder = fuse_e4e(encoder)
    decoder_state = unflatten_prefix(flat, "state_dict.decoder") if has_decoder else None
    if not has_decoder:
        logger.info("e4e: %s has no decoder weights; inversion works, previews are unavailable", source)
    return E4EInverter(encoder, latent_avg, decoder_state=decoder_state, opts=opts, source=str(source))


def load_e4e(path: str | Path) -> E4EInverter:
    """Read ``e4e_ffhq_encode.pt`` safely and return an :class:`E4EInverter` on the CPU, float32.

    Raises:
        MissingModelError: the file does not exist.
        CheckpointError: unreadable, unsafe or not an e4e checkpoint.
    """
    return e4e_from_checkpoint(load_file(path), source=path)


class E4EInverter:
    """e4e encoder + latent_avg, with a lazily built StyleGAN2-1024 decoder for previews.

    Args:
        encoder: an eval-mode :class:`Encoder4Editing` or its inference form
            :class:`~.e4e_fused.FusedE4E` (what :func:`load_e4e` builds); 18 rows.
        latent_avg: [18, 512] float32.
        decoder_state: the decoder's state dict (rosinality names) or None.
        opts: the checkpoint's training options (advisory).
        source: where the weights came from, for messages.
    """

    def __init__(
        self,
        encoder: Encoder4Editing,
        latent_avg: torch.Tensor,
        decoder_state: dict[str, torch.Tensor] | None = None,
        opts: dict[str, Any] | None = None,
        source: str = "e4e",
    ) -> None:
        self.encoder = encoder
        self.latent_avg = normalize_latent_avg(latent_avg, source)
        self._decoder_state = decoder_state
        self._decoder: Generator | None = None
        self.opts = dict(opts or {})
        self.source = source
        self.to()

    @property
    def device(self) -> torch.device:
        """Device of the encoder's weights (a host such as ComfyUI may move them between calls)."""
        return self._first_tensor().device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the networks; outputs are always float32."""
        return self._first_tensor().dtype

    def _first_tensor(self) -> torch.Tensor:
        # FusedE4E holds only buffers (no trainable parameters); the reference encoder has parameters
        return next(itertools.chain(self.encoder.parameters(), self.encoder.buffers()))

    @property
    def has_decoder(self) -> bool:
        """True if the checkpoint carried decoder weights (previews possible)."""
        return self._decoder is not None or self._decoder_state is not None

    @property
    def decoder_loaded(self) -> bool:
        """True once the generator module has been built (first :meth:`decode`)."""
        return self._decoder is not None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> E4EInverter:
        """Move the networks (in place) and return self; ``latent_avg`` stays float32."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"E4EInverter dtype must be a floating dtype, got {dtype}")
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        self.encoder.to(device=device, dtype=dtype)
        self._prepare(device)
        self.latent_avg = self.latent_avg.to(device, torch.float32)
        if self._decoder is not None:
            self._decoder.to(device=device, dtype=dtype)
        return self

    @property
    def encode_stages(self) -> int:
        """Number of ``progress`` calls :meth:`encode` makes for one face (backbone units, then style heads)."""
        return len(self._stages())

    def encode(self, images: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Aligned faces -> absolute W+ (encoder output + latent_avg).

        Args:
            images: [B, 3, 256, 256] RGB in [-1, 1] (FFHQ-aligned, see :mod:`.align`).
            progress: called as ``progress(done, total)`` after each backbone unit and style block (``total`` =
                :attr:`encode_stages` at batch 1); an exception it raises (e.g. an interruption) stops the encode.

        Returns:
            [B, 18, 512] float32 on :attr:`device`.
        """
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"e4e needs aligned faces as [B, 3, 256, 256] in [-1, 1]; got {list(images.shape)}. "
                "Align and resize the face to 256x256 first (channels first)."
            )
        if images.numel() and float(images.min()) >= 0.0:
            logger.warning("e4e: input has no negative values; expected RGB in [-1, 1], not [0, 1]")
        device = self.device
        x = images.to(device, self.dtype)
        if isinstance(self.encoder, FusedE4E):
            # a host (ComfyUI's ModelPatcher) may have moved the weights, which unpacks them; packing again is a no-op
            # when they are still packed
            self.encoder.pack_for_cpu()
        if device.type in ("cpu", "cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        hooks = []
        if progress is not None:
            stages = self._stages()
            total = len(stages) * self._slices(x.shape[0])
            done = [0]

            def tick(*_):
                done[0] += 1
                progress(done[0], total)

            hooks = [m.register_forward_hook(tick) for m in stages]
        try:
            with torch.no_grad():
                offsets = self.encoder(x)
        finally:
            for hook in hooks:
                hook.remove()
        return offsets.float() + self.latent_avg.to(device).unsqueeze(0)

    def _stages(self) -> list[torch.nn.Module]:
        """The modules whose completion :meth:`encode` reports: the 24 backbone units, then the style heads."""
        if isinstance(self.encoder, FusedE4E):
            return [*self.encoder.body, self.encoder.coarse, self.encoder.middle, self.encoder.fine]
        return [*self.encoder.body, *self.encoder.styles]

    def _slices(self, batch: int) -> int:
        """How many forwards one batch takes (the fused encoder runs a CPU batch in slices)."""
        if isinstance(self.encoder, FusedE4E) and self.device.type == "cpu":
            return -(-batch // self.encoder.max_batch)
        return 1

    def _prepare(self, device: torch.device) -> None:
        """Channels-last activations and weights on CPU/CUDA; on the CPU the fused encoder's weights packed once."""
        if device.type in ("cpu", "cuda"):
            # oneDNN and cuDNN convolutions are faster in NHWC; W+ moves by ~1e-6 (fp32)
            self.encoder.to(memory_format=torch.channels_last)
        if isinstance(self.encoder, FusedE4E):
            self.encoder.pack_for_cpu()  # CPU only: convolution weights in oneDNN's layout, not re-ordered per call

    def decoder(self) -> Generator:
        """The StyleGAN2-1024 decoder, built (strictly) from the kept weights on first use.

        Raises:
            CheckpointError: the checkpoint had no decoder weights.
        """
        if self._decoder is None:
            if self._decoder_state is None:
                raise CheckpointError(
                    f"{self.source} has no decoder (StyleGAN2) weights, so no preview can be made. "
                    "Use the full released e4e_ffhq_encode.pt (about 1.1 GB)."
                )
            with torch.device("meta"):
                gen = Generator(STYLEGAN_SIZE, STYLE_DIM, 8, channel_multiplier=2)
            gen.load_state_dict(self._decoder_state, strict=True, assign=True)
            gen.eval().requires_grad_(False)
            self._decoder = gen.to(device=self.device, dtype=self.dtype)
            self._decoder_state = None
            logger.info("e4e: built the StyleGAN2 decoder from %s on %s (%s)", self.source, self.device, self.dtype)
        return self._decoder

    def decode(self, wplus: torch.Tensor, size: int | None = None, fast: bool = False) -> torch.Tensor:
        """Absolute W+ -> RGB images through the e4e decoder (StyleGAN2 FFHQ 1024).

        Args:
            wplus: [B, 18, 512] absolute W+ (as returned by :meth:`encode`).
            size: output side in pixels (<= 1024); None = 1024.
            fast: with ``size`` < 1024, stop the generator at the smallest power of
                two >= size (its coarse RGB image; much cheaper, slightly softer)
                instead of rendering 1024 and downscaling with antialiasing.

        Returns:
            [B, 3, size, size] float32 in about [-1, 1] (not clamped), on :attr:`device`.
        """
        if wplus.ndim != 3 or tuple(wplus.shape[1:]) != (N_LATENT, STYLE_DIM):
            raise ValueError(f"e4e decode needs absolute W+ [B, 18, 512]; got {list(wplus.shape)}")
        out_size = STYLEGAN_SIZE if size is None else int(size)
        if not 1 <= out_size <= STYLEGAN_SIZE:
            raise ValueError(f"preview size must be in 1..1024 pixels, got {size}")
        gen = self.decoder()
        param = next(gen.parameters())
        stop = STYLEGAN_SIZE
        if fast:
            stop = 4
            while stop < out_size:
                stop *= 2
        with torch.no_grad():
            img = gen(wplus.to(param.device, param.dtype), max_resolution=stop).float()
        if img.shape[-1] != out_size:
            img = F.interpolate(img, size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=True)
        return img


def default_e4e_opts() -> dict[str, Any]:
    """The options that matter for inference, in the official plain-dict form."""
    return {
        "encoder_type": "Encoder4Editing",
        "stylegan_size": STYLEGAN_SIZE,
        "start_from_latent_avg": True,
        "dataset_type": "ffhq_encode",
        "progressive_steps": [0] + [20000 + 2000 * i for i in range(N_LATENT - 1)],
        "progressive_start": 20000,
        "progressive_step_every": 2000,
        "checkpoint_path": None,
        "device": "cpu",
    }


def build_e4e_checkpoint(
    seed: int = 0,
    opts: Mapping[str, Any] | None = None,
    latent_avg_shape: tuple[int, ...] = (N_LATENT, STYLE_DIM),
) -> dict[str, Any]:
    """A fresh randomly initialised checkpoint in the official layout (for smoke models and tests).

    The modules use their default initialisation under ``torch.manual_seed(seed)``
    (the global RNG is left untouched); ``latent_avg`` is the mean of the
    mapping network over 4096 seeded z, as StyleGAN's ``mean_latent``, so
    encode/decode give finite, O(1) outputs.

    Args:
        seed: RNG seed; the same seed gives the same tensors.
        opts: the ``opts`` dict to store (default :func:`default_e4e_opts`).
        latent_avg_shape: [18, 512] (official), [512] or [1, 18, 512].

    Returns:
        ``{"state_dict": {"encoder.*", "decoder.*"}, "latent_avg": Tensor, "opts": dict}``,
        all tensors float32 (``num_batches_tracked`` int64) on the CPU.
    """
    if tuple(latent_avg_shape) not in ((STYLE_DIM,), (N_LATENT, STYLE_DIM), (1, N_LATENT, STYLE_DIM)):
        raise ValueError(f"latent_avg_shape must be [512], [18, 512] or [1, 18, 512], got {list(latent_avg_shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = Encoder4Editing(STYLEGAN_SIZE)
        decoder = Generator(STYLEGAN_SIZE, STYLE_DIM, 8, channel_multiplier=2)
        with torch.no_grad():
            mean_w = decoder.mapping(torch.randn(4096, STYLE_DIM)).mean(0)
    state: dict[str, torch.Tensor] = {}
    state.update({f"encoder.{k}": v.detach() for k, v in encoder.state_dict().items()})
    state.update({f"decoder.{k}": v.detach() for k, v in decoder.state_dict().items()})
    latent_avg = (
        mean_w.clone()
        if tuple(latent_avg_shape) == (STYLE_DIM,)
        else mean_w.expand(N_LATENT, STYLE_DIM).reshape(latent_avg_shape).clone()
    )
    return {
        "state_dict": state,
        "latent_avg": latent_avg,
        "opts": dict(opts) if opts is not None else default_e4e_opts(),
    }

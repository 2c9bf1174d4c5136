"""W+ adapter cases: a diffusers SD1.5 UNet with stock, our and the official attn2 processors.

Two measures, arms interleaved in one process with identical weights:

* the whole UNet forward (64x64 latents, batch 2 as with CFG): ours / stock and official / stock;
* the 16 attn2 layers alone: their inputs are captured from one forward, then each
  layer is called with each processor (stock gets the 77 text tokens, the W+
  processors the 77 + 4 tokens).

Quick mode uses a two-block UNet with its own site table (same code paths, tiny sizes).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .harness import Row, check_parity, import_official_file, likeness, ratio_row, time_rounds

SD15 = dict(
    sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    attention_head_dim=8,
    layers_per_block=2,
)
TINY = dict(
    sample_size=8,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    layers_per_block=1,
    norm_num_groups=8,
)
# W+ processors vs each other: the same maths in another order (fp32, UNet outputs are O(1))
TOL = 1e-3


def _sites(unet, quick: bool):
    likeness()
    from likeness.models.wplus_adapter.sites import SD15_WPLUS_SITES, WPlusSite

    if not quick:
        return SD15_WPLUS_SITES
    sites = []
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            attn = unet.get_submodule(name[: -len(".processor")])
            sites.append(WPlusSite(index, name, ("input", index, 0), int(attn.to_q.weight.shape[0]), attn.heads))
    return tuple(sites)


def _setup(quick: bool, device: torch.device, official_root: Path | None):
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    from likeness.models.wplus_adapter.diffusers_unet import apply_wplus_adapter_to_unet, encode_context
    from likeness.models.wplus_adapter.model import WPlusAdapter

    torch.manual_seed(0)
    with torch.device(device):  # random init where it runs (seconds on a GPU, not a minute on its host CPU)
        unet = UNet2DConditionModel(**(TINY if quick else SD15)).eval().requires_grad_(False)
    ctx = unet.config.cross_attention_dim
    adapter = WPlusAdapter(ctx, sites=_sites(unet, quick)).eval().requires_grad_(False)
    with torch.no_grad():
        for p in adapter.parameters():
            if p.ndim == 2:  # Linear weights; the LayerNorm keeps weight 1, bias 0
                p.normal_(0, p.shape[-1] ** -0.5)
    adapter.to(device)
    stock = {name: AttnProcessor2_0() for name in unet.attn_processors}
    unet.set_attn_processor(dict(stock))
    ours = dict(stock)
    ours.update({n: p for n, p in _installed(unet, apply_wplus_adapter_to_unet, adapter).items()})
    official = None
    if official_root is not None:
        mod = import_official_file(official_root / "w_plus_adapter" / "attention_processor.py", "official_wplus_attn")
        official = dict(stock)
        for site in adapter.sites:
            layer = adapter.layer(site)
            proc = mod.WPlusAttnProcessor2_0(site.hidden_size, ctx, scale=1.0, num_tokens=4)
            proc.load_state_dict(layer.state_dict(), strict=True)
            official[site.diffusers_name] = proc.to(device)
    g = torch.Generator().manual_seed(1)
    side = 8 if quick else 64
    sample = torch.randn(2, 4, side, side, generator=g).to(device)
    text = torch.randn(2, 77, ctx, generator=g).to(device)
    wplus = torch.randn(1, 18, 512, generator=g).to(device)
    with torch.no_grad():
        context = torch.cat([encode_context(text[:1], None, adapter), encode_context(text[1:], wplus, adapter)])
    unet.set_attn_processor(dict(stock))
    return unet, {"stock": stock, "ours": ours, "official": official}, sample, text, context


def _installed(unet, apply, adapter) -> dict:
    apply(unet, adapter, scale=1.0)
    return {n: p for n, p in unet.attn_processors.items() if n.endswith("attn2.processor")}


def wplus_cases(
    official_root: Path | None,
    device: torch.device,
    rounds: int,
    quick: bool,
    lows: list[torch.dtype],
    fp32: bool = True,
) -> list[Row]:
    """Whole-UNet and attn2-only rows in fp32 and in each low precision (UNet and adapter cast alike)."""
    likeness()
    unet, procs, sample, text, context = _setup(quick, device, official_root)
    what = "tiny 2-block UNet, 8² latents" if quick else "SD1.5 UNet, 64² latents"
    rows = _rows(unet, procs, (sample, text, context), device, rounds, f"{what}, batch 2, fp32") if fp32 else []
    for low in lows:
        unet.to(low)
        for arm in ("ours", "official"):
            for proc in (procs[arm] or {}).values():
                if isinstance(proc, torch.nn.Module):
                    proc.to(low)
        name = {torch.float16: "fp16", torch.bfloat16: "bf16"}[low]
        inputs = (sample.to(low), text.to(low), context.to(low))
        rows += _rows(unet, procs, inputs, device, rounds, f"{what}, batch 2, {name}", tol=None)
    return rows


def _rows(unet, procs, inputs, device, rounds, what: str, tol: float | None = TOL) -> list[Row]:
    sample, text, context = inputs
    timestep = torch.tensor([500.0], device=device)
    arms_procs = {k: v for k, v in procs.items() if v is not None}

    def forward(arm: str):
        unet.set_attn_processor(dict(arms_procs[arm]))
        return unet(sample, timestep, encoder_hidden_states=text if arm == "stock" else context).sample

    with torch.inference_mode():
        parity = None
        if "official" in arms_procs and tol is not None:
            parity = check_parity("W+ UNet", forward("ours"), forward("official"), tol)
        # set_attn_processor is cheap next to a forward; each arm pays it alike
        t = time_rounds({a: (lambda a=a: forward(a)) for a in arms_procs}, rounds, device)
        rows = [
            ratio_row(f"UNet forward with our W+ processors ({what})", t["ours"], t["stock"], "stock", parity=parity)
        ]
        if "official" in t:
            rows.append(
                ratio_row(f"UNet forward with the official W+ processors ({what})", t["official"], t["stock"], "stock")
            )
        rows += _attn2_rows(unet, arms_procs, (sample, text, context), device, rounds, what)
        if what.endswith("fp32"):
            rows.append(_flop_row(forward, arms_procs))
    unet.set_attn_processor(dict(procs["stock"]))
    return rows


def _attn2_rows(unet, arms_procs, inputs, device, rounds, what: str) -> list[Row]:
    """Time the 16 attn2 layers alone on inputs captured from one stock forward."""
    sample, text, context = inputs
    captured: list[tuple[str, torch.nn.Module, torch.Tensor]] = []
    handles = []
    for name in arms_procs["stock"]:
        if name.endswith("attn2.processor"):
            attn = unet.get_submodule(name[: -len(".processor")])
            hook = _capture(captured, name)
            handles.append(attn.register_forward_pre_hook(hook, with_kwargs=True))
    unet.set_attn_processor(dict(arms_procs["stock"]))
    unet(sample, torch.tensor([500.0], device=device), encoder_hidden_states=text)
    for h in handles:
        h.remove()

    def layers(arm: str):
        ctx = text if arm == "stock" else context
        for name, attn, hidden in captured:
            arms_procs[arm][name](attn, hidden, encoder_hidden_states=ctx)

    t = time_rounds({a: (lambda a=a: layers(a)) for a in arms_procs}, max(rounds, 6) * 3, device)
    n = len(captured)
    rows = [ratio_row(f"the {n} attn2 layers alone, ours ({what})", t["ours"], t["stock"], "stock")]
    if "official" in t:
        rows.append(ratio_row(f"the {n} attn2 layers alone, official ({what})", t["official"], t["stock"], "stock"))
        rows.append(ratio_row(f"the {n} attn2 layers alone, ours ({what})", t["ours"], t["official"]))
    return rows


def _capture(store: list, name: str):
    def hook(module, args, kwargs):
        store.append((name, module, args[0] if args else kwargs["hidden_states"]))

    return hook


def _flop_row(forward, arms_procs) -> Row:
    """Matrix FLOPs of one UNet forward per arm (torch.utils.flop_counter): the noise-free view of the overhead."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for arm in arms_procs:
        counter = FlopCounterMode(display=False)
        with counter:
            forward(arm)
        flops[arm] = counter.get_total_flops()
    note = f"official / stock {flops['official'] / flops['stock']:.4f}" if "official" in flops else ""
    ratio = flops["ours"] / flops["stock"]
    return Row(
        "UNet forward matrix FLOPs with our W+ processors (counted, not timed)",
        flops["ours"] / 1e9,
        flops["stock"] / 1e9,
        ratio,
        ratio,
        ratio,
        1,
        baseline="stock",
        note=note,
        extra={"unit": "GFLOP"},
    )

"""W+ adapter patch overhead inside ComfyUI: the UNet forward and its 16 attn2 layers, patched vs stock.

ComfyUI's own UNet (the smoke SD1.5 checkpoint: full SD1.5 architecture, random
weights, fp32 on the CPU), 64x64 latents (512x512 px), batch 2 as CFG makes it
(one uncond + one cond chunk), default attention. Arms are interleaved in one
process (bench/harness.py); ratios are patched / stock per round, median with
min-max and n.

* whole forward: stock, patched (weight 1) and patched (weight 0, the branch skipped);
* the 16 attn2 layers alone, on inputs captured from one stock forward: stock
  ``CrossAttention`` vs what ComfyUI runs with the replace (to_q/k/v, our replace, to_out).

Needs a ComfyUI checkout and the smoke models:
    COMFYUI_PATH=/path/to/ComfyUI python -m bench.bench_comfy_patch --models-dir DIR [--rounds 6]
(``python -m models.cli smoke-models --models-dir DIR`` writes them.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from .harness import likeness, load_average, machine, ratio_row, time_rounds


def _comfy():
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        raise SystemExit("set COMFYUI_PATH to a ComfyUI checkout")
    sys.path.insert(0, comfy_path)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True


def _attn2_inputs(model, x, sigma, ctx, options):
    """(block, n, context, transformer_options) of every attn2 call of one stock forward."""
    from comfy.ldm.modules.attention import BasicTransformerBlock

    captured, handles = [], []
    for module in model.model.diffusion_model.modules():
        if isinstance(module, BasicTransformerBlock) and module.attn2 is not None:

            def hook(attn, args, kwargs, block=module):
                captured.append((block, args[0], kwargs["context"], dict(kwargs["transformer_options"])))

            handles.append(module.attn2.register_forward_pre_hook(hook, with_kwargs=True))
    model.model.apply_model(x, sigma, c_crossattn=ctx, transformer_options=options)
    for h in handles:
        h.remove()
    return captured


def _replaced_attn2(block, n, context, topts, replaces):
    """What BasicTransformerBlock runs for an attn2 with a replace (ComfyUI 0.33, attention.py)."""
    extra = {k: v for k, v in topts.items() if k not in ("patches", "patches_replace")}
    extra.update(n_heads=block.n_heads, dim_head=block.d_head, attn_precision=block.attn_precision)
    key = (topts["block"][0], topts["block"][1], topts["block_index"])
    q = block.attn2.to_q(n)
    k = block.attn2.to_k(context)
    v = block.attn2.to_v(context)
    return block.attn2.to_out(replaces[key](q, k, v, extra))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="a models folder with the smoke models")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved timed rounds (after one warm-up)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    _comfy()
    import comfy.sd

    likeness()
    from likeness.models.wplus_adapter.model import load_wplus_adapter
    from likeness.nodes.patching import LoadedWPlusAdapter, apply_wplus_adapter
    from likeness.tools.smoke.writers import SMOKE_CHECKPOINT

    models = Path(args.models_dir)
    model = comfy.sd.load_checkpoint_guess_config(
        str(models / "checkpoints" / SMOKE_CHECKPOINT), output_vae=False, output_clip=False
    )[0]
    adapter_path = models / "wplus" / "wplus_adapter.bin"
    loaded = LoadedWPlusAdapter.wrap(load_wplus_adapter(adapter_path), adapter_path.name)
    wplus = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(0))
    variants = {
        "stock": model,
        "weight 1": apply_wplus_adapter(model, loaded, wplus, 1.0, 0.0, 1.0)[0],
        "weight 0": apply_wplus_adapter(model, loaded, wplus, 0.0, 0.0, 1.0)[0],
    }
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 64, 64, generator=g)
    ctx = torch.randn(2, 77, 768, generator=g)
    sigmas = torch.linspace(14.6, 0.03, 31)
    sigma = sigmas[10].repeat(2)

    def options(m):
        opts = dict(m.model_options.get("transformer_options", {}))
        opts.update(cond_or_uncond=[1, 0], sigmas=sigma, sample_sigmas=sigmas)
        return opts

    device = torch.device("cpu")
    with torch.inference_mode():
        arms = {
            name: (lambda m=m: m.model.apply_model(x, sigma, c_crossattn=ctx, transformer_options=options(m)))
            for name, m in variants.items()
        }
        t = time_rounds(arms, args.rounds, device)
        captured = _attn2_inputs(model, x, sigma, ctx, options(model))
        replaces = variants["weight 1"].model_options["transformer_options"]["patches_replace"]["attn2"]
        t2 = time_rounds(
            {
                "stock": lambda: [b.attn2(n, context=c, transformer_options=o) for b, n, c, o in captured],
                "patched": lambda: [_replaced_attn2(b, n, c, o, replaces) for b, n, c, o in captured],
            },
            args.rounds * 4,
            device,
        )
    what = "ComfyUI SD1.5 UNet, 64² latents, batch 2 (CFG), fp32"
    rows = [
        ratio_row(f"UNet forward, W+ patch weight 1 ({what})", t["weight 1"], t["stock"], "stock"),
        ratio_row(f"UNet forward, W+ patch weight 0 ({what})", t["weight 0"], t["stock"], "stock"),
        ratio_row(f"the {len(captured)} attn2 layers alone, W+ patch weight 1", t2["patched"], t2["stock"], "stock"),
    ]
    lines = [f"Machine: {machine(device)}; load average at the end {load_average()}.", ""]
    lines += ["| measure | patched / stock | min–max | n | patched | stock |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.case} | {r.ratio:.3f} | {r.ratio_min:.3f}–{r.ratio_max:.3f} | {r.n} | {r.ours_s:.3f} s | "
            f"{r.base_s:.3f} s |"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

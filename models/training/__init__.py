"""Training of the adapters: dataset preparation, the W+ adapter (stages 1 and 2) and the PSTF W+ stream.

ComfyUI-free library code; the command-line verbs live in ``tools/train/``.

* :mod:`.dataset`: the prepared dataset folder (``dataset.json``, ``manifest.jsonl``, ``items/<id>/``).
* :mod:`.prepare`: photos -> dataset (face detection, alignment, masks, e4e codes, ID embeddings).
* :mod:`.order`: the deterministic, resumable sample order and per-step random generators.
* :mod:`.loop`: the accelerate training loop (accumulation, mixed precision, checkpoints, log, resume).
* :mod:`.base`: diffusers UNet / VAE / text encoders from a diffusers folder or a single file.
* :mod:`.smoke`: tiny random models of the SD1.5 and SDXL families and a synthetic dataset.
* :mod:`.wplus` / :mod:`.wplus_data`: the W+ adapter trainer and its data (stage-2 augmentation).
* :mod:`.pstf` / :mod:`.pstf_data`: the PSTF W+-stream trainer and its data.
* :mod:`.sample`: a small DDIM sampler for validation images.
"""

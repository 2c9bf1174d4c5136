"""The batch queue client: sweep specs, a resumable manifest, several ComfyUI servers."""

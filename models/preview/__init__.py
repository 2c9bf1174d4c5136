"""Live previews of attribute edits for the frontend (request checks, W+ sources, cached models, rendering)."""

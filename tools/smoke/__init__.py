"""Smoke models: random weights in the official file layouts."""

"""Workflow files: API <-> UI conversion and the generated UI layout."""

"""Command-line plumbing of the training verbs (``prepare-dataset``, ``train-wplus``, ``train-pstf``)."""

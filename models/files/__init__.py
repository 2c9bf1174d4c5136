"""Model files: the one safe checkpoint reader, the folder registry, extra model paths and the doctor report."""

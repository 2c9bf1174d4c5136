"""Photo -> absolute W+: FFHQ alignment, background whitening, the e4e model and W+ code files."""

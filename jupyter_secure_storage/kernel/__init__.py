"""The kernel side: IPython extension, magics, output redaction, history guard, injection."""

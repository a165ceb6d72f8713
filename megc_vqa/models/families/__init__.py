"""One module per model family; each defines ``FAMILY`` (see :mod:`.base`)."""

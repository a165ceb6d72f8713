"""megc-vqa: micro-expression VQA, spotting and recognition with open video language models."""

__version__ = "0.1.0"

"""Model registry, offline tiny models of the real architectures, and the training collator."""

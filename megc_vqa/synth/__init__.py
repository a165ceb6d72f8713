"""Synthetic micro-expression datasets written in the real datasets' layouts, for tests and the demo."""

"""MEGC question-answer records: templates, generation from clips, and the official JSONL files."""

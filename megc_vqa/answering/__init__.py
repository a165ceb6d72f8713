"""Answering question files with a (fine-tuned) model: the inference engine, run_vqa and the REPL."""

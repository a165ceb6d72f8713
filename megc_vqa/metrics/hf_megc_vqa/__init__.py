"""The ME-VQA metric as a Hugging Face ``evaluate`` module: ``evaluate.load(HF_MODULE_PATH)``."""

from pathlib import Path

HF_MODULE_PATH = str(Path(__file__).resolve().parent)

"""LoRA/QLoRA instruction tuning: recipe configs, subject-disjoint splits, the trainer, adapter merge."""

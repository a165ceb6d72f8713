"""MEGC metrics: ME-VQA (UF1, UAR, BLEU, ROUGE), ME-STR (STRS, official and strict) and ME-LVQA."""

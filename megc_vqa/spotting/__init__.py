"""Spot then recognise: the 3D-CNN spotter, long-video inference, ME-STR and ME-LVQA pipelines."""

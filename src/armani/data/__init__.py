"""Garment data: the procedural dataset, real-data loading and control-signal transforms."""

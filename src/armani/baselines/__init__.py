"""Baselines for the comparison tab and the tables: models that are not ARMANI but read the
same data, the same tokenizer and (where they take text) the same trained text encoder.

- :mod:`armani.baselines.diffusion`: a text-conditioned pixel-space UNet from ``diffusers``
  (DDPM training, DPM-Solver++ or DDIM sampling with classifier-free guidance).

The DALL-E-style and M6-Fashion-style baselines are switches on ARMANI's own code
(``armani.config.VARIANTS``), not separate modules.
"""

from armani.baselines.diffusion import (
    DiffusionBaseline,
    DiffusionBaselineConfig,
    DiffusionBaselinePipeline,
    DiffusionSettings,
    TextTower,
)

__all__ = [
    "DiffusionBaseline",
    "DiffusionBaselineConfig",
    "DiffusionBaselinePipeline",
    "DiffusionSettings",
    "TextTower",
]

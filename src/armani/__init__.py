"""ARMANI: part-level garment-text alignment for unified cross-modal fashion design.

A newcomer's map (one module per idea of the paper):

- ``armani.parts``            the 15 garment part labels shared by every module
- ``armani.text``             CLIP BPE tokenization with word bookkeeping
- ``armani.data``             procedural garments, real-data loading, control signals
- ``armani.models.maskclip``  MaskCLIP, Sec. 3.2 (Eq. 3-8)
- ``armani.models.segmenter`` the mask prediction network M
- ``armani.models.vqgan``     stage 1, the cross-modal codebook (Sec. 3.3, Eq. 9-11)
- ``armani.models.transformer`` stage 2, the cross-modal transformer (Sec. 3.4, Eq. 12-14)
- ``armani.sampling``         AR (KV-cached) and mask-predict samplers
- ``armani.training``         the Accelerate engine and one module per training stage
- ``armani.config``           typed configs and the tiny / default / paper presets
- ``armani.pipeline``         ``ArmaniPipeline``: text / sketch / partial image -> garments
- ``armani.load_pipeline``    opens any saved pipeline or training run (ARMANI or a baseline)
- ``armani.evaluation``       metrics, attribute classifier and the evaluation reports / CLIs
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``armani.load_pipeline``, imported on first use so ``import armani`` stays light."""
    if name == "load_pipeline":
        from armani.loading import load_pipeline

        return load_pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["load_pipeline"]

"""One module per training stage; importing this package registers them all.

Order of a full run (``--stage all``): segmenter -> maskclip -> vqgan -> sketch_tokenizer
-> partial_tokenizer -> transformer. Each stage exports to ``RUN/<stage>/final`` and later
stages load what they need from there.
"""

from armani.training.stages import (  # noqa: F401  (registration)
    attributes,
    base,
    diffusion,
    maskclip,
    refiner,
    segmenter,
    tokenizers,
    transformer,
)

# Not in ORDER (trained on demand): attribute_classifier (evaluation), diffusion (a baseline),
# refiner (the detail refiner, after vqgan).
ORDER = ("segmenter", "maskclip", "vqgan", "sketch_tokenizer", "partial_tokenizer", "transformer")

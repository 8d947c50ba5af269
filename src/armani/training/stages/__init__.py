"""One module per training stage; importing this package registers them all.

Order of a full run (``--stage all``): segmenter -> maskclip -> vqgan -> sketch_tokenizer
-> partial_tokenizer -> transformer. Each stage exports to ``RUN/<stage>/final`` and later
stages load what they need from there.
"""

from armani.training.stages import base, maskclip, segmenter, tokenizers, transformer  # noqa: F401  (registration)

ORDER = ("segmenter", "maskclip", "vqgan", "sketch_tokenizer", "partial_tokenizer", "transformer")

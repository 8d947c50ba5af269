"""``python -m armani.evaluate``: the documented command that evaluates a generation checkpoint.

The code lives in :mod:`armani.evaluation.generation` (FID, IS, CLIPScore, MaskCLIP score,
part-level accuracy, anchors, the command line); this module only re-exports its public
names and runs its :func:`~armani.evaluation.generation.main`. ``--help`` lists the options.
"""

from __future__ import annotations

from armani.evaluation.generation import (
    EvalConfig,
    add_anchors,
    anchors_report,
    evaluate,
    format_table,
    main,
    parse_args,
    plot_attribute_accuracy,
    score_anchors,
)

__all__ = [
    "EvalConfig",
    "add_anchors",
    "anchors_report",
    "evaluate",
    "format_table",
    "main",
    "parse_args",
    "plot_attribute_accuracy",
    "score_anchors",
]

if __name__ == "__main__":
    raise SystemExit(main())

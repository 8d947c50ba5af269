"""``python -m armani.average_weights A B --out DIR``: the weighted mean of saved copies of one model.

Checkpoint averaging for one component folder (``config.json`` + ``model.safetensors``), e.g.
the shipped transformer and a run that continued it::

    python -m armani.average_weights checkpoints/armani/transformer runs/v13/transformer/final \\
        --out checkpoints/armani/transformer --storage-dtype bfloat16

The folders must hold the same config and tensors (:func:`armani.models.checkpoint.average_checkpoints`).
The output also gets the last folder's ``training_report.json`` (the most recent training),
with an ``averaged_from`` list naming every folder and its weight, so the model card can say
what the weights are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from armani.models.checkpoint import average_checkpoints

REPORT_NAME = "training_report.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", help="saved copies of one model (two or more)")
    ap.add_argument("--out", required=True, help="folder to write (may be one of the inputs)")
    ap.add_argument("--weights", type=float, nargs="+", help="one per folder, summing to 1 (default: equal)")
    ap.add_argument("--storage-dtype", default="float32", choices=("float32", "bfloat16"),
                    help="dtype of the stored weights (bfloat16: half the size)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folders = [Path(f) for f in args.folders]
    weights = args.weights or [1.0 / len(folders)] * len(folders)
    # read the report before writing: --out may be one of the inputs
    report_path = folders[-1] / REPORT_NAME
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    out = average_checkpoints(folders, args.out, weights, args.storage_dtype)
    if report is not None:
        report["averaged_from"] = [{"folder": str(f), "weight": w} for f, w in zip(folders, weights)]
        (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}: " + " + ".join(f"{w:g} x {f}" for f, w in zip(folders, weights)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Compute -> quality over the transformer's whole lineage (no generation: reads reports).

    python research/lineage_curve.py --out research/results/lineage_curve.json \\
        --figure research/results/lineage_curve.png

The stage-2 transformer was never trained in one go: every session continued the
previous session's weights (warm restart of the learning rate), sometimes with a recipe change.
Each of those checkpoints was scored by ``python -m armani.evaluate`` on text prompts of the
val split, seeds 0, 1, 2, and the reports are kept in ``research/results``. This script reads
them and plots part accuracy, category accuracy and FID (mean and spread over the seeds)
against the transformer's cumulative training steps, with the floor (a random real garment),
the ceiling (a real render of the prompt) and, where the reports have it, the image codebook's
own reconstructions of the renders (the best a stage 2 can reach through that codebook).

A point is ``--point "LABEL|STEPS|MINUTES|DIR"``: the cumulative transformer steps, the wall-
clock minutes of that session's transformer training (from the model card), and the folder
holding ``text_seed{0,1,2}.json`` (or ``text/seed{0,1,2}.json``). A fifth field ``branch``
marks a continuation that was not continued further (not shipped): it is drawn apart, from the
point before it, and its hours do not add to the points after it. Without ``--point`` the
shipped lineage below is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from research.tables import stats  # noqa: E402

RESULTS = ROOT / "research" / "results"

# label, cumulative transformer steps (batch 16), that session's training minutes, reports.
# Minutes are those of the model card of each session (the machine was sometimes shared,
# so they are an upper bound on the compute).
LINEAGE = [
    ("1,400 steps (first shipped)", 1400, 24.8, RESULTS / "table1" / "armani" / "text"),
    ("+3,500", 4900, 92.7, RESULTS / "armani_2026-12-02"),
    ("+3,000, edge sketch codebook (v4)", 7900, 86.7, RESULTS / "armani_2026-12-02_v4"),
    ("+3,500, 2D positions (v6)", 11400, 67.7, RESULTS / "armani_2026-12-02_v6"),
    ("+3,500, background weight 0.5 (v7)", 14900, 41.1, RESULTS / "armani_2026-12-02_v7"),
    # v8 decodes with the fine-tuned decoder (dec1) and trained on a machine ~1.6x slower
    ("+4,000, same recipe (v8)", 18900, 76.4, RESULTS / "armani_2026-12-04_v8"),
    ("+3,000, four condition draws per row (v9)", 21900, 71.0, RESULTS / "armani_2026-12-04_v9"),
    # v9 continued on the same rows and draws; not shipped (flat val CE, held-out worse)
    ("+3,000, same rows (v10, not shipped)", 24900, 60.5, RESULTS / "armani_2026-12-04_v10", "branch"),
    # v9 continued one pass over 60,000 rows (40,000 of them new), resumed once after a session's end
    ("+3,750 from v9, 60,000 rows (v11)", 25650, 105.1, RESULTS / "armani_2026-12-04_v11"),
    # v11 continued one pass over 120,000 rows (60,000 of them new), resumed twice at sessions' ends
    ("+7,500, 120,000 rows (v12)", 33150, 168.4, RESULTS / "armani_2026-12-04_v12"),
    # v12 continued on 40,000 new rows (120,000-159,999) at a lower peak lr (3e-4); alone it
    # lost text category (0.98 -> 0.94), so it was not shipped as it is ...
    ("+3,000, 40,000 new rows (v13, not shipped)", 36150, 52.0, RESULTS / "armani_2026-12-05_v13", "branch"),
    # ... but the mean of its weights and v12's was (python -m armani.average_weights)
    ("v12 and v13 weights averaged (v13avg)", 36150, 52.0, RESULTS / "armani_2026-12-05_v13avg"),
    # v13avg continued on 40,000 more new rows (160,000-199,999), lr 3e-4, resumed once at a
    # session's end; its minutes include stretches shared with evaluations ...
    ("+3,000, 40,000 new rows (v14, not shipped)", 39150, 93.6, RESULTS / "armani_2026-12-05_v14", "branch"),
    # ... and the mean of its weights and v13avg's is shipped
    ("v13avg and v14 weights averaged (v14avg)", 39150, 93.6, RESULTS / "armani_2026-12-05_v14avg"),
    # v14avg continued the same way on 40,000 more new rows (200,000-239,999); neither it nor
    # its mean with v14avg scored better on text (category 0.96 against 0.99), so v14avg stays
    ("+3,000, 40,000 new rows (v15, not shipped)", 42150, 52.8, RESULTS / "armani_2026-12-05_v15", "branch"),
    ("v14avg and v15 weights averaged (v15avg, not shipped)", 42150, 52.8, RESULTS / "armani_2026-12-05_v15avg",
     "branch"),
]

METRICS = (("part_accuracy", "part accuracy"), ("category", "category accuracy"), ("fid", "FID (classifier features)"))


def _shown(folder: Path) -> str:
    """A folder as the JSON keeps it: relative to the repository when inside it."""
    try:
        return str(folder.resolve().relative_to(ROOT))
    except ValueError:
        return str(folder)


def _reports(folder: Path) -> list[dict]:
    files = sorted(folder.glob("text_seed*.json")) or sorted(folder.glob("seed*.json"))
    if not files:
        raise FileNotFoundError(f"{folder}: no text_seed*.json / seed*.json reports")
    return [json.loads(f.read_text()) for f in files]


def _value(report: dict, metric: str, anchor: str | None = None):
    node = report.get("anchors", {}).get(anchor, {}) if anchor else report
    if metric == "category":
        attrs = node.get("attributes", {})
        value = attrs.get("category")
        return value.get("accuracy") if isinstance(value, dict) else value
    return node.get(metric)


def collect(points: list[tuple]) -> list[dict]:
    """One row per point ``(label, steps, minutes, folder[, "branch"])``."""
    rows = []
    for label, steps, minutes, folder, *kind in points:
        reports = _reports(Path(folder))
        row = {"label": label, "steps": steps, "session_minutes": minutes, "reports": _shown(Path(folder)),
               "branch": kind == ["branch"], "seeds": [r.get("config", {}).get("seed") for r in reports]}
        for metric, _ in METRICS:
            measured = stats([_value(r, metric) for r in reports])
            row[metric] = measured["mean"]
            row[f"{metric}:std"] = measured["std"] or (0.0 if measured["n"] else None)  # one seed: no spread
            for anchor in ("floor", "ceiling", "codebook"):
                row[f"{metric}:{anchor}"] = stats([_value(r, metric, anchor) for r in reports])["mean"]
        rows.append(row)
    hours = 0.0  # along the path that was continued; a branch adds its own hours to it only
    for row in rows:
        row["cumulative_hours"] = round(hours + row["session_minutes"] / 60, 2)
        if not row["branch"]:
            hours += row["session_minutes"] / 60
    return rows


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.4 * len(METRICS), 3.6))
    continued = [r for r in rows if not r["branch"]]
    for ax, (key, label) in zip(axes, METRICS):
        ax.errorbar([r["steps"] for r in continued], [r[key] for r in continued],
                    yerr=[r[f"{key}:std"] for r in continued],
                    fmt="o-", color="tab:blue", capsize=3, label="ARMANI (3 seeds)")
        before, legend = None, "not continued"  # the legend names the first branch only
        for r in rows:
            if not r["branch"]:
                before = r
                continue
            if before is not None:
                ax.plot([before["steps"], r["steps"]], [before[key], r[key]], ls="--", color="tab:gray", lw=1)
            ax.errorbar([r["steps"]], [r[key]], yerr=[r[f"{key}:std"]], fmt="o", mfc="white", color="tab:gray",
                        capsize=3, label=legend)
            legend = None
        anchors = (("ceiling", "tab:green", "--", "real render (ceiling)"),
                   ("codebook", "tab:purple", "-.", "codebook reconstruction"),
                   ("floor", "tab:red", ":", "random garment (floor)"))
        for anchor, color, style, name in anchors:
            value = rows[-1].get(f"{key}:{anchor}")
            if value is not None:
                ax.axhline(value, color=color, ls=style, lw=1, label=name)
        ax.set_xlabel("transformer training steps along its lineage (batch 16)")
        ax.set_title(label, fontsize=10)
        if key == "fid":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("The transformer's lineage, one point per continuation: text prompts, val split, 50 prompts x 2 per seed",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _parse_point(spec: str) -> tuple:
    parts = spec.split("|")
    if len(parts) not in (4, 5) or parts[4:] not in ([], ["branch"]):
        raise ValueError(f"--point takes 'LABEL|STEPS|MINUTES|DIR' or 'LABEL|STEPS|MINUTES|DIR|branch', got {spec!r}")
    return (parts[0], int(parts[1]), float(parts[2]), Path(parts[3]), *parts[4:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--point", action="append", default=[], help="LABEL|STEPS|MINUTES|DIR[|branch] (default: the lineage)")
    p.add_argument("--extra", action="append", default=[], help="LABEL|STEPS|MINUTES|DIR[|branch] appended to the lineage")
    p.add_argument("--out", default="outputs/lineage_curve.json")
    p.add_argument("--figure", help="plot here")
    args = p.parse_args(argv)
    try:
        points = [_parse_point(s) for s in args.point] or list(LINEAGE)
        points += [_parse_point(s) for s in args.extra]
        rows = collect(points)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"points": rows}, indent=2) + "\n")
    for r in rows:
        print(f"{r['steps']:>6} {r['cumulative_hours']:5.2f} h  part {r['part_accuracy']:.3f}  "
              f"category {r['category']:.2f}  FID {r['fid']:.0f}  {r['label']}{'  (branch)' if r['branch'] else ''}")
    print(f"wrote {out}")
    if args.figure:
        print(f"wrote {plot(rows, Path(args.figure))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

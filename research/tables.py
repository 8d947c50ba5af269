"""The paper's Table 1 (ARMANI against its baselines) and Table 2 (its ablations), measured
with ``python -m armani.evaluate`` (:mod:`armani.evaluation.generation`) over several seeds,
with the spread.

    python research/tables.py --table 1 --seeds 0 1 2 --num-prompts 50 --samples-per-prompt 2 \\
        --out research/results/table1 --readme research/README.md
    python research/tables.py --table 2 --seeds 0 1 2 --out research/results/table2 --readme research/README.md
    python research/tables.py --methods armani=checkpoints/armani dalle=runs/dalle --seeds 0 1 2 --out /tmp/t

Every method is evaluated on four columns: the three tasks of the paper (text, text + sketch,
text + partial image) on prompts of the procedural ``val`` split, and the attribute
combinations held out of training (``heldout`` split, text only). Each (method, column, seed)
is one :func:`armani.evaluation.generation.evaluate` call: the seed draws that call's prompts *and* its
samples, so the spread covers both, and every method sees the same prompts for a given seed.
Each method's pipeline is loaded once and reused for all its columns and seeds.

Methods come from folders (a saved pipeline or a training run directory, anything
:func:`armani.loading.load_pipeline` opens). ``--table 1`` lists armani, dalle, m6 and
diffusion; ``--table 2`` lists armani and the ablations no_fusion, no_sem1, no_sem2; without
``--table`` all seven. A listed method is looked for in ``checkpoints/<name>`` unless
``--methods name=DIR`` says where it is. A method without a usable checkpoint is kept as a
"not trained yet" row, never dropped. A column a method cannot do (the diffusion baseline
reads text only) is reported as unsupported.

Outputs under ``--out``: ``<method>/<column>/seed<k>.json`` (the full evaluation report),
``summary.json`` (mean, sample std and the per-seed values of every metric, per method and
column) and ``part_accuracy.png`` (bar chart of part accuracy with the std as error bars).
``--readme FILE`` rewrites the block between ``<!-- table<N>:start -->`` and
``<!-- table<N>:end -->`` in FILE with the Markdown table and the command that produced it;
nothing else in the file changes.

Metrics are the report's own keys (see ``armani/evaluation/generation.py``): FID and IS (Inception when its
weights are in the local torch hub cache, else the attribute classifier's features: the
report names the extractor), MaskCLIP score, CLIPScore (only with open_clip weights), part
accuracy (mean over the attributes the classifier reads >= 95% right on real renders), and the
exact button / pocket counts on prompts that ask for them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
DEFAULT_CLASSIFIER = CHECKPOINTS / "attribute_classifier"
TINY_CLASSIFIER = Path(tempfile.gettempdir()) / "armani-notebooks" / "attribute-classifier"

# name -> what the row is (the training variant of the same name in armani.config.VARIANTS,
# or the diffusion baseline of armani.baselines.diffusion).
METHOD_LABELS: dict[str, str] = {
    "armani": "ARMANI",
    "dalle": "DALL·E-style (visual-only codebook)",
    "m6": "M6-Fashion-style (PQ codebook, mask-predict)",
    "diffusion": "diffusion (diffusers UNet)",
    "no_fusion": "w/o MaskCLIP fusion",
    "no_sem1": "w/o semantic loss, stage 1",
    "no_sem2": "w/o semantic loss, stage 2",
    "armani_nar": "ARMANI, bidirectional (mask-predict)",
}
TABLES: dict[int, tuple[str, ...]] = {
    1: ("armani", "dalle", "m6", "diffusion"),
    2: ("armani", "no_fusion", "no_sem1", "no_sem2"),
}
TABLE_TITLES = {1: "Table 1: ARMANI and the baselines", 2: "Table 2: ablations"}
NOT_TRAINED = "not trained yet"


@dataclass(frozen=True)
class Column:
    """One column of the tables: an evaluation task on prompts of one procedural split."""

    key: str
    task: str
    split: str
    label: str

    @property
    def slug(self) -> str:  # a folder name
        return self.key.replace("+", "_")


COLUMNS: tuple[Column, ...] = (
    Column("text", "text", "val", "text"),
    Column("text+sketch", "text+sketch", "val", "text + sketch"),
    Column("text+partial", "text+partial", "val", "text + partial"),
    Column("heldout", "text", "heldout", "held-out combos (text)"),
)


def _dig(report: dict, dotted: str):
    value: Any = report
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


@dataclass(frozen=True)
class Metric:
    """A number read from an evaluation report by its (dotted) key."""

    key: str
    label: str
    better: str  # "higher" | "lower"
    in_table: bool = True  # shown in the Markdown table (all metrics go to the JSON)

    def read(self, report: dict) -> float | None:
        value = _dig(report, self.key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None  # None, "unavailable", NaN: not measured
        return float(value)


METRICS: tuple[Metric, ...] = (
    Metric("fid", "FID", "lower"),
    Metric("is.mean", "IS", "higher"),
    Metric("maskclip_score", "MaskCLIP score", "higher"),
    Metric("clip_score", "CLIPScore", "higher"),
    Metric("part_accuracy", "part accuracy", "higher"),
    Metric("fidelity.part_accuracy", "prompt fidelity", "higher"),
    Metric("controls.silhouette_iou.value", "silhouette IoU", "higher"),
    Metric("controls.kept_region_psnr.model_only.mean_db", "kept region, model (dB)", "higher"),
    Metric("count_accuracy_when_requested.button", "button count (asked)", "higher", in_table=False),
    Metric("count_accuracy_when_requested.pocket", "pocket count (asked)", "higher", in_table=False),
    Metric("seconds_per_image", "s / image", "lower", in_table=False),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}

# Where a report keeps each metric's anchors (see armani.evaluation.anchors): the ceiling is
# a real render of the prompt, the floor a random real garment that ignores it. Fidelity is
# 1 and 0 on them by definition; the kept region of a real render is the partial image itself.
ANCHOR_KEYS: dict[str, dict[str, str | float | None]] = {
    "fid": {"ceiling": "anchors.ceiling.fid", "floor": "anchors.floor.fid"},
    "maskclip_score": {"ceiling": "anchors.ceiling.maskclip_score", "floor": "anchors.floor.maskclip_score"},
    "part_accuracy": {"ceiling": "anchors.ceiling.part_accuracy", "floor": "anchors.floor.part_accuracy"},
    "fidelity.part_accuracy": {"ceiling": 1.0, "floor": 0.0},
    "controls.silhouette_iou.value": {"ceiling": "controls.silhouette_iou.ceiling",
                                      "floor": "controls.silhouette_iou.floor"},
    "controls.kept_region_psnr.model_only.mean_db": {"ceiling": None,
                                                     "floor": "controls.kept_region_psnr.floor.mean_db"},
}
ANCHOR_LABELS = {"ceiling": "real render of the prompt (ceiling)", "floor": "random real garment (floor)"}


def read_anchor(report: dict, metric: str, which: str) -> float | None:
    """The ``which`` ("ceiling" | "floor") anchor of ``metric`` in one report (None if absent)."""
    where = ANCHOR_KEYS.get(metric, {}).get(which)
    if where is None or not report.get("anchors"):
        return None
    if not isinstance(where, str):
        return float(where)
    value = _dig(report, where)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value) else None


@dataclass
class Method:
    """A row of a table: a name, the folder it is loaded from, and whether that worked."""

    name: str
    path: Path
    label: str = ""
    explicit: bool = False  # given with --methods (else looked for in checkpoints/)
    status: str = "pending"  # "ready" | NOT_TRAINED
    reason: str = ""

    def __post_init__(self):
        self.path = Path(self.path)
        self.label = self.label or METHOD_LABELS.get(self.name, self.name)


# -- choosing and loading methods --------------------------------------------------------------
def parse_method_specs(specs: list[str] | None) -> dict[str, Path]:
    """``["armani=checkpoints/armani", ...]`` -> ``{"armani": Path(...)}`` (order kept)."""
    out: dict[str, Path] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ValueError(f"--methods takes NAME=DIR, got {spec!r}")
        if name in out:
            raise ValueError(f"method {name!r} is given twice")
        out[name] = Path(path).expanduser()
    return out


def select_methods(table: int | None = None, explicit: dict[str, Path] | None = None,
                   checkpoints: Path = CHECKPOINTS) -> list[Method]:
    """The rows of a table: its methods (all known ones without ``table``), then any other
    explicitly given method. A method not given explicitly is looked for in ``checkpoints/<name>``."""
    if table is not None and table not in TABLES:
        raise ValueError(f"--table must be one of {sorted(TABLES)}, got {table}")
    explicit = dict(explicit or {})
    names = list(TABLES[table]) if table is not None else list(METHOD_LABELS)
    names += [n for n in explicit if n not in names]
    return [Method(n, explicit.get(n, Path(checkpoints) / n), explicit=n in explicit) for n in names]


def resolve_checkpoint(method: Method) -> Path:
    """The folder to load. The diffusion baseline trains as a stage of a run (``RUN/diffusion/
    final``); ``load_pipeline`` would open such a run as an ARMANI pipeline, so for the
    method named ``diffusion`` a run directory resolves to its diffusion export."""
    path = method.path
    export = path / "diffusion" / "final"
    if method.name == "diffusion" and not (path / "pipeline.json").is_file() and (export / "pipeline.json").is_file():
        return export
    return path


def load_method(method: Method, **settings):
    """Open the method's pipeline once; on a missing / unfinished checkpoint mark the method
    ``not trained yet`` (with the reason) and return None. Corrupt checkpoints raise."""
    from armani.loading import load_pipeline

    if method.status == NOT_TRAINED:  # decided beforehand (e.g. a notebook on one model)
        return None
    path = resolve_checkpoint(method)
    if not path.exists():
        method.status, method.reason = NOT_TRAINED, f"no checkpoint at {show(path)}"
        return None
    try:
        pipe = load_pipeline(path, **settings)
    except FileNotFoundError as err:  # e.g. a run whose transformer stage has not finished
        method.status, method.reason = NOT_TRAINED, str(err)
        return None
    method.status, method.reason = "ready", ""
    return pipe


def load_methods(methods: list[Method], **settings) -> dict[str, Any]:
    """``{name: pipeline or None}``, each pipeline loaded once."""
    pipes = {}
    for m in methods:
        pipes[m.name] = load_method(m, **settings)
        if pipes[m.name] is None and m.explicit:
            print(f"warning: {m.name}: {m.reason}", file=sys.stderr)
    return pipes


def unsupported_reason(pipe, task: str) -> str | None:
    """Why ``pipe`` cannot do ``task`` (None when it can)."""
    kind = type(pipe).__name__
    if "sketch" in task and getattr(pipe, "sketch_tokenizer", None) is None:
        return f"{kind} takes no sketch"
    if "partial" in task and getattr(pipe, "partial_tokenizer", None) is None:
        return f"{kind} takes no partial image"
    return None


# -- statistics ---------------------------------------------------------------------------------
def stats(values: list[float | None]) -> dict:
    """Mean and sample standard deviation (ddof 1) of the measured values (None = not measured);
    std is None with fewer than two values."""
    got = [float(v) for v in values if v is not None]
    mean = float(np.mean(got)) if got else None
    std = float(np.std(got, ddof=1)) if len(got) >= 2 else None
    return {"mean": mean, "std": std, "n": len(got), "values": list(values)}


def aggregate(reports: list[dict]) -> dict:
    """The per-seed reports of one (method, column) -> mean/std per metric and per attribute."""
    metrics = {m.key: stats([m.read(r) for r in reports]) for m in METRICS}
    attributes = {}
    for key in (reports[0].get("attributes") or {}) if reports else ():
        values = [(r.get("attributes") or {}).get(key, {}).get("accuracy") for r in reports]
        trusted = [bool((r.get("attributes") or {}).get(key, {}).get("trusted")) for r in reports]
        attributes[key] = {**stats(values), "trusted": all(trusted)}
    first = reports[0] if reports else {}
    anchors = {which: {m: stats([read_anchor(r, m, which) for r in reports]) for m in ANCHOR_KEYS}
               for which in ANCHOR_LABELS}
    return {
        "metrics": metrics,
        "anchors": anchors,
        "attributes": attributes,
        "feature_extractor": first.get("feature_extractor"),
        "maskclip_judge": first.get("maskclip_judge"),
        "trusted_attributes": sorted(set.intersection(*(set(r.get("trusted_attributes") or []) for r in reports)))
        if reports else [],
        "classifier": first.get("classifier"),
        "pipeline": first.get("pipeline"),
    }


# -- running ------------------------------------------------------------------------------------
@dataclass
class TableOptions:
    """What every evaluation of a table shares (stored in the summary)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    num_prompts: int = 50
    samples_per_prompt: int = 2
    classifier: str | None = None  # None: checkpoints/attribute_classifier when present
    judge: str | None = None  # None: each method's own MaskCLIP, else the shipped one (evaluate's rule)
    inception: str = "auto"
    clip_weights: str | None = None
    clip_model: str | None = None
    columns: tuple[str, ...] = tuple(c.key for c in COLUMNS)


def _columns(keys) -> list[Column]:
    by_key = {c.key: c for c in COLUMNS}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; choose from {list(by_key)}")
    return [by_key[k] for k in keys]


def _eval_config(method: Method, column: Column, seed: int, opts: TableOptions):
    from armani.evaluation.generation import EvalConfig

    return EvalConfig(checkpoint=str(resolve_checkpoint(method)), task=column.task, split=column.split,
                      num_prompts=opts.num_prompts, samples_per_prompt=opts.samples_per_prompt,
                      classifier=opts.classifier, judge=opts.judge, inception=opts.inception,
                      clip_weights=opts.clip_weights, clip_model=opts.clip_model, seed=seed, progress=False)


_SAME_RUN_KEYS = ("checkpoint", "task", "split", "num_prompts", "samples_per_prompt", "classifier", "judge",
                  "inception", "seed")


def _reusable(path: Path, cfg) -> dict | None:
    """The stored report at ``path`` when it was made with the same settings as ``cfg``."""
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    stored = report.get("config") or {}
    want = asdict(cfg)
    return report if all(_same_setting(k, stored.get(k), want[k]) for k in _SAME_RUN_KEYS) else None


_PATH_KEYS = ("checkpoint", "classifier", "judge")


def _same_setting(key: str, stored, wanted) -> bool:
    """Equal settings; folders count as equal when they are the same folder (reports store them
    relative to the repository, a run may name them absolutely or from another directory)."""
    if key in _PATH_KEYS and stored is not None and wanted is not None:
        return (ROOT / stored).resolve() == Path(wanted).resolve()
    return stored == wanted


def portable(report: dict) -> dict:
    """The report with its folders written relative to the repository when they are inside it,
    so committed reports name no machine's paths and resume anywhere."""
    for where in (report, report.get("config") or {}):
        for key in _PATH_KEYS:
            if isinstance(where.get(key), str):
                where[key] = show(Path(where[key]))
    return report


def run_table(methods: list[Method], opts: TableOptions, out: str | Path | None = None,
              pipes: dict[str, Any] | None = None, table: int | None = None, command: str | None = None,
              resume: bool = False, progress: bool = True,
              evaluate_fn: Callable | None = None, anchors_fn: Callable | None = None) -> dict:
    """Evaluate every ready method on every column and seed; returns the summary (also written
    to ``out/summary.json`` with one report per (method, column, seed) when ``out`` is given).

    ``pipes``: already loaded pipelines by name (None = not trained); methods missing from it
    are loaded here, once each. ``resume``: reuse stored reports made with the same settings;
    a stored report made before reports carried their anchors gets them from ``anchors_fn``
    (default :func:`armani.evaluation.generation.anchors_report`: no generation) and is written back.
    """
    from tqdm.auto import tqdm

    if evaluate_fn is None:
        from armani.evaluation.generation import evaluate as evaluate_fn
    if not opts.seeds:
        raise ValueError("give at least one seed")
    if opts.num_prompts < 1 or opts.samples_per_prompt < 1:
        raise ValueError("--num-prompts and --samples-per-prompt must be >= 1")
    columns = _columns(opts.columns)
    out = Path(out) if out is not None else None
    pipes = dict(pipes or {})
    for m in methods:
        if m.name not in pipes:
            pipes.update(load_methods([m]))
        elif pipes[m.name] is None and m.status == "pending":
            m.status, m.reason = NOT_TRAINED, m.reason or "no pipeline given"
        elif pipes[m.name] is not None:
            m.status = "ready"
    ready = [m for m in methods if pipes.get(m.name) is not None]
    # Anchors depend on the prompts (column, seed), not on the method: computed once each.
    anchors_cache: dict[tuple, dict] = {}
    bar = tqdm(total=len(ready) * len(columns) * len(opts.seeds), desc="tables", unit="eval", disable=not progress)
    rows = []
    try:
        for m in methods:
            row = {"name": m.name, "label": m.label, "path": show(m.path), "status": m.status,
                   "reason": m.reason or None, "columns": {}}
            rows.append(row)
            pipe = pipes.get(m.name)
            if pipe is None:
                continue
            row["pipeline"] = type(pipe).__name__
            for col in columns:
                why = unsupported_reason(pipe, col.task)
                if why:
                    row["columns"][col.key] = {"status": "unsupported", "reason": why}
                    bar.update(len(opts.seeds))
                    continue
                reports, files = [], []
                for seed in opts.seeds:
                    bar.set_postfix_str(f"{m.name} / {col.key} / seed {seed}")
                    cfg = _eval_config(m, col, seed, opts)
                    path = out / m.name / col.slug / f"seed{seed}.json" if out is not None else None
                    report = _reusable(path, cfg) if (resume and path is not None) else None
                    if report is not None and "anchors" not in report:
                        from armani.evaluation.generation import add_anchors, anchors_report

                        key = (col.key, seed, int(getattr(pipe, "image_size", 64)))
                        if key not in anchors_cache:
                            anchors_cache[key] = (anchors_fn or anchors_report)(cfg, pipe)
                        add_anchors(report, json.loads(json.dumps(anchors_cache[key])))
                        path.write_text(json.dumps(report, indent=2))
                    if report is None:
                        report = portable(evaluate_fn(cfg, pipe=pipe))
                        if path is not None:
                            path.parent.mkdir(parents=True, exist_ok=True)
                            path.write_text(json.dumps(report, indent=2))
                    reports.append(report)
                    if path is not None:
                        files.append(str(path.relative_to(out)))
                    bar.update(1)
                row["columns"][col.key] = {"status": "measured", **aggregate(reports), "reports": files}
    finally:
        bar.close()
    summary = {
        "table": table,
        "title": TABLE_TITLES.get(table, "ARMANI evaluation") if table else "ARMANI evaluation",
        "command": command,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "settings": {**asdict(opts), "seeds": list(opts.seeds), "columns": list(opts.columns)},
        "columns": [asdict(c) for c in columns],
        "metrics": [asdict(mt) for mt in METRICS],
        "methods": rows,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        fig_path = out / "part_accuracy.png"
        plot_metric(summary, "part_accuracy", fig_path)
        summary["figure"] = fig_path.name
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_summary(path: str | Path) -> dict:
    """A ``summary.json`` written by :func:`run_table` (a file or the ``--out`` folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"no table summary at {path}; run research/tables.py first")
    return json.loads(path.read_text())


# -- presenting ---------------------------------------------------------------------------------
def _decimals(x: float) -> int:
    return 3 if abs(x) < 10 else 1


def _num(x: float) -> str:
    return f"{x:.{_decimals(x)}f}"


def format_stat(s: dict | None) -> str:
    """``mean ± std`` with the mean's decimals (just the mean with one seed, ``—`` when not measured)."""
    if not s or s.get("mean") is None:
        return "—"
    d = _decimals(s["mean"])
    if s.get("std") is None:
        return f"{s['mean']:.{d}f}"
    return f"{s['mean']:.{d}f} ± {s['std']:.{d}f}"


def _table_metrics(summary: dict) -> list[Metric]:
    """The table's metric columns: those measured for some method (CLIPScore needs open_clip
    weights, so it often is not), and always the main four so a gap stays visible."""
    always = {"fid", "is.mean", "maskclip_score", "part_accuracy"}
    shown = []
    for m in METRICS:
        if not m.in_table:
            continue
        measured = any((cell.get("metrics") or {}).get(m.key, {}).get("n")
                       for row in summary["methods"] for cell in row["columns"].values())
        if m.key in always or measured:
            shown.append(m)
    return shown


def markdown_table(summary: dict) -> str:
    """The summary as one Markdown table: a block of rows per column (task), one row per method;
    the best mean of each metric in a block in bold; then notes on how to read it."""
    metrics = _table_metrics(summary)
    arrows = {"higher": "↑", "lower": "↓"}
    head = ["task", "method", *(f"{m.label} {arrows[m.better]}" for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for col in summary["columns"]:
        cells = {row["name"]: row["columns"].get(col["key"]) for row in summary["methods"]}
        best = {}  # metric -> the method whose mean is best, when it is better than every other as shown
        for m in metrics:
            means = sorted((float(_num(c["metrics"][m.key]["mean"])), name) for name, c in cells.items()
                           if c and c.get("status") == "measured" and c["metrics"][m.key]["mean"] is not None)
            if m.better == "higher":
                means.reverse()
            if len(means) >= 2 and means[0][0] != means[1][0]:
                best[m.key] = means[0][1]
        for row in summary["methods"]:
            cell = cells[row["name"]]
            values = []
            if row["status"] != "ready":
                values = [f"*{NOT_TRAINED}*", *["—"] * (len(metrics) - 1)]
            elif cell is None:
                values = ["—"] * len(metrics)
            elif cell["status"] == "unsupported":
                values = [f"*n/a: {cell['reason']}*", *["—"] * (len(metrics) - 1)]
            else:
                for m in metrics:
                    text = format_stat(cell["metrics"][m.key])
                    values.append(f"**{text}**" if best.get(m.key) == row["name"] else text)
            lines.append("| " + " | ".join([col["label"], row["label"], *values]) + " |")
        # The anchors depend on the prompts only, which every method shares: read them from the first cell.
        anchored = next((c for c in cells.values() if c and c.get("status") == "measured" and any(
            (c.get("anchors") or {}).get("ceiling", {}).get(m.key, {}).get("n") for m in metrics)), None)
        if anchored is not None:
            for which, label in ANCHOR_LABELS.items():
                values = [format_stat(anchored["anchors"][which].get(m.key)) for m in metrics]
                lines.append("| " + " | ".join([col["label"], f"*{label}*", *values]) + " |")
    return "\n".join(lines) + "\n\n" + table_notes(summary)


def table_notes(summary: dict) -> str:
    """What the numbers are: seeds, prompts, extractor, judge, trusted attributes, missing methods."""
    s = summary["settings"]
    cells = [c for row in summary["methods"] for c in row["columns"].values() if c.get("status") == "measured"]
    extractors = sorted({c["feature_extractor"] for c in cells if c.get("feature_extractor")})
    judges = sorted({c["maskclip_judge"] for c in cells if c.get("maskclip_judge")})
    trusted = sorted(set.intersection(*(set(c["trusted_attributes"]) for c in cells))) if cells else []
    classifiers = sorted({c["classifier"] for c in cells if c.get("classifier")})
    seeds = s["seeds"]
    notes = [
        f"Mean ± sample std over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); each seed draws "
        f"{s['num_prompts']} prompts of the split and {s['samples_per_prompt']} sample(s) per prompt "
        "(held-out column: the attribute combinations kept out of training). "
        "Bold: the best mean of a task (none on a tie). The two rows in italics anchor each task: real renders "
        "of the prompts (ceiling) and random real garments that ignore them (floor), scored the same way; "
        "prompt fidelity = (part accuracy - floor) / (ceiling - floor).",
        f"FID / IS features: {'; '.join(extractors) or 'unavailable (no Inception weights, no attribute classifier)'}."
        + (" Classifier features give numbers comparable between these rows only, not with the paper's."
           if any(e.startswith("attribute-classifier") for e in extractors) else ""),
        f"MaskCLIP score judge: {', '.join(judges) or 'none'}"
        + (f" (`--judge {s['judge']}`)." if s.get("judge") else "."),
    ]
    if classifiers:
        notes.append("Part accuracy: mean accuracy over the attributes the classifier reads >= 95% right on real "
                     f"renders; trusted here: {', '.join(trusted) if trusted else 'none, so it is not reported'}.")
    else:
        notes.append("Part accuracy: not measured (no attribute classifier; train one with "
                     "`--stage attribute_classifier`).")
    missing = [r for r in summary["methods"] if r["status"] != "ready"]
    if missing:
        notes.append("Not trained yet: " + "; ".join(f"{r['name']} ({r['reason']})" for r in missing) + ".")
    return "\n".join(f"- {n}" for n in notes)


def plot_metric(summary: dict, metric: str = "part_accuracy", path: str | Path | None = None):
    """Grouped bars: one group per column, one bar per method, error bars = std over seeds.
    Unmeasured cells are marked in place; methods not trained yet are named in the legend.
    Returns the figure (saved to ``path`` and closed when a path is given)."""
    from matplotlib.figure import Figure

    m = METRIC_BY_KEY.get(metric)
    if m is None:
        raise ValueError(f"unknown metric {metric!r}; choose from {list(METRIC_BY_KEY)}")
    cols = summary["columns"]
    rows = summary["methods"]
    width = 0.8 / max(1, len(rows))
    fig = Figure(figsize=(max(6.0, 1.6 * len(cols) + 0.3 * len(rows)), 3.6))
    ax = fig.subplots()
    x = np.arange(len(cols))
    any_bar = False
    top = 0.0
    for k, row in enumerate(rows):
        pos = x - 0.4 + width * (k + 0.5)
        means, errs = [], []
        for c in cols:
            cell = row["columns"].get(c["key"])
            st = (cell or {}).get("metrics", {}).get(metric) if (cell or {}).get("status") == "measured" else None
            means.append(st["mean"] if st and st["mean"] is not None else np.nan)
            errs.append(st["std"] if st and st["std"] is not None else 0.0)
        means_a = np.array(means, dtype=float)
        label = row["label"] if row["status"] == "ready" else f"{row['label']} ({NOT_TRAINED})"
        ax.bar(pos, np.nan_to_num(means_a), width, yerr=errs, capsize=3, label=label,
               alpha=1.0 if row["status"] == "ready" else 0.3)
        for p, v, err, c in zip(pos, means_a, errs, cols):
            if np.isnan(v):
                cell = row["columns"].get(c["key"])
                why = NOT_TRAINED if row["status"] != "ready" else (
                    "n/a" if (cell or {}).get("status") == "unsupported" else "not measured")
                ax.text(p, 0.01, why, rotation=90, ha="center", va="bottom", fontsize=6, color="grey")
            else:
                any_bar = True
                top = max(top, v + err)
    ax.set_xticks(x, [textwrap.fill(c["label"], 10) for c in cols], fontsize=8)
    ax.set_ylabel(f"{m.label} ({'higher' if m.better == 'higher' else 'lower'} is better)")
    if metric == "part_accuracy":
        ax.set_ylim(0, 1.05)
    elif any_bar:
        ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    n = len(summary["settings"]["seeds"])
    ax.set_title(f"{summary.get('title', '')}: {m.label}, mean ± std over {n} seed(s)", fontsize=9)
    if not any_bar:
        reason = ("no attribute is trusted (the classifier reads none >= 95% right on real renders) or there is "
                  "no classifier") if metric == "part_accuracy" else "nothing measured"
        ax.text(0.5, 0.6, f"{m.label} not measured:\n{textwrap.fill(reason, 50)}", transform=ax.transAxes,
                ha="center", va="center", fontsize=8, bbox={"facecolor": "white", "edgecolor": "grey"})
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


# -- README blocks ------------------------------------------------------------------------------
def markers(table: int) -> tuple[str, str]:
    return f"<!-- table{table}:start -->", f"<!-- table{table}:end -->"


def replace_block(text: str, table: int, body: str) -> str:
    """``text`` with the part between the table's markers replaced by ``body`` (markers kept)."""
    start, end = markers(table)
    i, j = text.find(start), text.find(end)
    if i < 0 or j < 0 or j < i:
        raise ValueError(f"the README has no {start} ... {end} block")
    if text.find(start, i + 1) >= 0 or text.find(end, j + 1) >= 0:
        raise ValueError(f"the README has more than one {start} ... {end} block")
    return text[: i + len(start)] + "\n" + body.strip("\n") + "\n" + text[j:]


def readme_block(summary: dict, readme: Path, out: Path | None) -> str:
    """The Markdown that goes between the markers: command, provenance, table, notes, figure."""
    lines = [f"Measured {summary['created'][:10]}" + (f" at commit `{summary['git_commit']}`"
                                                      if summary.get("git_commit") else "") + " with:", "",
             "```bash", summary.get("command") or "(command not recorded)", "```", "", markdown_table(summary)]
    if out is not None and summary.get("figure"):
        figure = os.path.relpath((Path(out) / summary["figure"]).resolve(), readme.resolve().parent)
        lines += ["", f"![part accuracy per method and task]({Path(figure).as_posix()})"]
        for name, caption in (summary.get("grids") or {}).items():
            grid = os.path.relpath((Path(out) / name).resolve(), readme.resolve().parent)
            lines += ["", f"![{caption}]({Path(grid).as_posix()})"]
        lines += ["", f"Per-seed reports and `summary.json`: `{show(Path(out))}/`."]
    return "\n".join(lines)


def update_readme(readme: str | Path, table: int, summary: dict, out: str | Path | None = None) -> Path:
    readme = Path(readme)
    if not readme.is_file():
        raise FileNotFoundError(f"--readme {readme} does not exist")
    body = readme_block(summary, readme, Path(out) if out is not None else None)
    readme.write_text(replace_block(readme.read_text(), table, body))
    return readme


# -- qualitative grid (Fig. 7/9/12/13) ----------------------------------------------------------
def write_grids(summary: dict, pipes: dict[str, Any], out: Path, num_prompts: int, seed: int = 0) -> dict[str, str]:
    """One sample grid per column (``samples_<column>.png`` in ``out``: the first
    ``num_prompts`` prompts of ``seed``, one image per method), recorded in ``summary["grids"]``
    as ``{file: caption}``. Rows that were not trained or cannot do a task say so in their cells."""
    from armani.evaluation.prompts import default_prompts

    rows = summary["methods"]
    labels = {r["name"]: r["label"] for r in rows}
    reasons = {r["name"]: r.get("reason") or NOT_TRAINED for r in rows}
    shown = {r["name"]: pipes.get(r["name"]) for r in rows}
    grids = {}
    for col in (Column(**c) for c in summary["columns"]):
        prompts = default_prompts(num_prompts, col.split, seed=seed)
        fig = sample_grid(shown, prompts, task=col.task, seed=seed, labels=labels, reasons=reasons,
                          title=f"{col.label}: the first {num_prompts} prompts of seed {seed}")
        name = f"samples_{col.slug}.png"
        fig.savefig(out / name, dpi=72, bbox_inches="tight")  # ~250 KB each: committed beside the tables
        grids[name] = f"samples: {col.label}, seed {seed}"
    summary["grids"] = grids
    return grids

def sample_grid(pipes: dict[str, Any], prompts: list[dict], task: str = "text", seed: int = 0,
                labels: dict[str, str] | None = None, reasons: dict[str, str] | None = None,
                title: str | None = None):
    """Same prompts for every method: one column per prompt, one row per method (plus a first
    row with the control image for the sketch / partial tasks). Each image is the first sample
    :func:`armani.evaluation.generation.evaluate` draws for that prompt and seed. Returns a matplotlib figure."""
    from matplotlib.figure import Figure

    from armani.evaluation.prompts import make_controls

    labels = labels or {}
    reasons = reasons or {}
    names = list(pipes)
    control_row = task != "text"
    n_rows = len(names) + int(control_row)
    fig = Figure(figsize=(1.5 * len(prompts) + 1.6, 1.55 * n_rows + 0.9))
    axes = fig.subplots(n_rows, len(prompts), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_box_aspect(1)  # empty cells as square as the images
    ready = [p for p in pipes.values() if p is not None]
    ref_size = int(getattr(ready[0], "image_size", 64)) if ready else 64
    for i, prompt in enumerate(prompts):
        axes[0, i].set_title(textwrap.fill(prompt["text"], 24), fontsize=6)
        if control_row:
            c = make_controls(prompt["attributes"], task, ref_size, np.random.default_rng([seed, i, 1]))
            if c.sketch is not None:
                axes[0, i].imshow(c.sketch, cmap="gray")
            else:
                shown = c.partial.copy()
                shown[~c.keep_mask] = 200  # blanked area in light grey
                axes[0, i].imshow(shown)
        for r, name in enumerate(names):
            ax = axes[r + int(control_row), i]
            pipe = pipes[name]
            why = reasons.get(name) if pipe is None else unsupported_reason(pipe, task)
            if pipe is None or why:
                ax.text(0.5, 0.5, textwrap.fill(NOT_TRAINED if pipe is None else why, 14), ha="center",
                        va="center", fontsize=6, color="grey", transform=ax.transAxes)
                continue
            size = int(getattr(pipe, "image_size", 64))
            c = make_controls(prompt["attributes"], task, size, np.random.default_rng([seed, i, 1]))
            out = pipe(text=prompt["text"], num_images=1, seed=seed * 100_003 + i, **c.pipeline_kwargs())
            ax.imshow(out.images[0])
    if control_row:
        axes[0, 0].set_ylabel("sketch" if task == "text+sketch" else "partial", fontsize=7)
    for r, name in enumerate(names):
        axes[r + int(control_row), 0].set_ylabel(textwrap.fill(labels.get(name, METHOD_LABELS.get(name, name)), 16),
                                                 fontsize=7)
    fig.suptitle(title or f"task: {task}, seed {seed}", fontsize=8)
    fig.tight_layout()
    return fig


# -- helpers for the notebooks ------------------------------------------------------------------
def notebook_methods(table: int, mode: str, armani_path: str | Path) -> list[Method]:
    """The rows a notebook shows. ``shipped``: the folders in ``checkpoints/``. Otherwise (a tiny
    run or a given checkpoint) the notebook's model is ``armani`` and the other methods are not
    trained, unless ``$ARMANI_NOTEBOOK_METHODS`` ("name=DIR name=DIR") names their folders."""
    extra = parse_method_specs(os.environ.get("ARMANI_NOTEBOOK_METHODS", "").split())
    if mode == "shipped":
        return select_methods(table, extra)
    methods = select_methods(table, {"armani": Path(armani_path), **extra})
    for m in methods:
        if m.name not in extra and m.name != "armani":
            m.status, m.reason = NOT_TRAINED, ("this notebook runs on one model; set ARMANI_NOTEBOOK_MODE=shipped "
                                               "or ARMANI_NOTEBOOK_METHODS")
    return methods


def notebook_classifier(image_size: int) -> str | None:
    """The attribute classifier a notebook uses: the shipped one when present; for a tiny
    (32 px) model without it, a tiny classifier trained once into ``$TMPDIR`` (a few seconds;
    barely trained, so none of its attributes is trusted); else None (no part accuracy)."""
    if (DEFAULT_CLASSIFIER / "model.safetensors").is_file():
        return None
    if image_size <= 32:
        return str(ensure_tiny_classifier())
    return None


def ensure_tiny_classifier(out: Path = TINY_CLASSIFIER) -> Path:
    """``train.py --config tiny --stage attribute_classifier`` into ``out`` once; the
    classifier folder (``out/attribute_classifier/final``)."""
    final = out / "attribute_classifier" / "final"
    if (final / "DONE").is_file():
        return final
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "src" / "armani" / "train.py"), "--config", "tiny", "--stage",
           "attribute_classifier", "--output", str(out), f"data.cache_dir={out / 'data'}"]
    print("training a tiny attribute classifier once:", " ".join(cmd[1:]))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tiny attribute-classifier training failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return final


# -- command line -------------------------------------------------------------------------------
def show(path: Path) -> str:
    """``path`` relative to the repository (POSIX slashes) when it lies inside it, else as given."""
    path = Path(path)
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _git_commit() -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python research/tables.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=int, choices=sorted(TABLES),
                   help="1: armani, dalle, m6, diffusion; 2: armani and the ablations (default: all methods)")
    p.add_argument("--methods", nargs="+", metavar="NAME=DIR",
                   help="where methods are (default: checkpoints/<name>); names beyond the table's add rows")
    p.add_argument("--checkpoints", default=str(CHECKPOINTS), help="folder holding <name>/ checkpoints")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num-prompts", type=int, default=50, help="procedural prompts per evaluation")
    p.add_argument("--samples-per-prompt", type=int, default=2)
    p.add_argument("--columns", nargs="+", default=[c.key for c in COLUMNS], choices=[c.key for c in COLUMNS])
    p.add_argument("--classifier", help=f"attribute classifier folder (default {show(DEFAULT_CLASSIFIER)} "
                                        "when present)")
    p.add_argument("--judge", help="pipeline whose segmenter + MaskCLIP score every method (default: each "
                                   "method's own, else the shipped one)")
    p.add_argument("--inception", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--clip-weights", help="open_clip .safetensors for CLIPScore")
    p.add_argument("--clip-model", help="open_clip architecture of --clip-weights")
    p.add_argument("--out", help="output folder (default research/results/table<N>, or research/results/all)")
    p.add_argument("--readme", help="Markdown file whose table<N> marker block is rewritten (needs --table)")
    p.add_argument("--resume", action="store_true", help="reuse per-seed reports already in --out with the "
                                                         "same settings")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--grid", type=int, default=6, metavar="N",
                   help="also draw a sample grid per column from the first N prompts of seed 0 (0: none)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    command = "python research/tables.py " + shlex.join(raw)
    try:
        if args.readme and args.table is None:
            raise ValueError("--readme rewrites the block of one table: give --table 1 or --table 2")
        if args.readme and not Path(args.readme).is_file():
            raise FileNotFoundError(f"--readme {args.readme} does not exist")
        methods = select_methods(args.table, parse_method_specs(args.methods), Path(args.checkpoints))
        out = Path(args.out) if args.out else ROOT / "research" / "results" / (
            f"table{args.table}" if args.table else "all")
        opts = TableOptions(seeds=tuple(args.seeds), num_prompts=args.num_prompts,
                            samples_per_prompt=args.samples_per_prompt, classifier=args.classifier,
                            judge=args.judge, inception=args.inception, clip_weights=args.clip_weights,
                            clip_model=args.clip_model, columns=tuple(args.columns))
        pipes = load_methods(methods)  # once, for the evaluations and the grids
        summary = run_table(methods, opts, out=out, pipes=pipes, table=args.table, command=command,
                            resume=args.resume, progress=not args.no_progress)
        if args.grid > 0:
            write_grids(summary, pipes, out, args.grid)
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(summary))
    print(f"\nwrote {out / 'summary.json'} and {out / summary['figure']}")
    if args.readme:
        print(f"rewrote the table{args.table} block of {update_readme(args.readme, args.table, summary, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

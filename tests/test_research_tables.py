"""research/tables.py: Tables 1 and 2 over several seeds with the spread. On the tiny run (2 prompts,
1 sample, 3 seeds): one report per (method, column, seed), mean / std per metric and column, missing
methods kept as "not trained yet" rows, each pipeline loaded once, and only the README's marker block
rewritten. Without models: aggregation, unsupported columns, resolution of the diffusion baseline."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from research import tables  # noqa: E402

COLUMN_KEYS = ("text", "text+sketch", "text+partial", "heldout")
SEEDS = (0, 1, 2)
README = """# Results

Some text that must survive.

<!-- table1:start -->
Table 1 is not measured yet.
<!-- table1:end -->

Between the tables.

<!-- table2:start -->
Table 2 is not measured yet.
<!-- table2:end -->

After the tables.
"""


# -- on the tiny run ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """A tiny attribute classifier whose validation record trusts two attributes, so that part
    accuracy (the mean over trusted attributes) is computed."""
    final = tables.ensure_tiny_classifier(tmp_path_factory.mktemp("classifier_run"))
    folder = tmp_path_factory.mktemp("classifier") / "trusting"
    shutil.copytree(final, folder)
    validation = json.loads((folder / "validation.json").read_text())
    validation["accuracy"].update({"category": 0.99, "color": 0.97})
    (folder / "validation.json").write_text(json.dumps(validation))
    return folder


@pytest.fixture(scope="module")
def table_run(tiny_run, classifier, tmp_path_factory):
    """``research/tables.py --table 2`` with armani and no_sem2 = the tiny run, the other two
    ablations absent; returns (out dir, readme, argv, number of pipeline loads, exit code)."""
    import armani.loading

    base = tmp_path_factory.mktemp("tables")
    out, readme, empty = base / "out", base / "README.md", base / "checkpoints"
    empty.mkdir()
    readme.write_text(README)
    argv = ["--table", "2", "--methods", f"armani={tiny_run}", f"no_sem2={tiny_run}", "--checkpoints", str(empty),
            "--num-prompts", "2", "--samples-per-prompt", "1", "--seeds", *map(str, SEEDS),
            "--classifier", str(classifier), "--out", str(out), "--readme", str(readme), "--no-progress", "--grid", "2"]
    loads = []
    real_load = armani.loading.load_pipeline

    def counting_load(path=None, **settings):
        loads.append(path)
        return real_load(path, **settings)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(armani.loading, "load_pipeline", counting_load)
        mp.setattr(torch.hub, "get_dir", lambda: str(base / "hub"))  # offline: no Inception weights
        mp.delenv("ARMANI_OPENCLIP_WEIGHTS", raising=False)
        rc = tables.main(argv)
    return out, readme, argv, loads, rc


def test_one_report_per_method_column_and_seed(table_run, tiny_run):
    out, _, _, loads, rc = table_run
    assert rc == 0
    assert len(loads) == 2  # armani and no_sem2: one load each, not one per seed or column
    for method in ("armani", "no_sem2"):
        for key in COLUMN_KEYS:
            for seed in SEEDS:
                report = json.loads((out / method / key.replace("+", "_") / f"seed{seed}.json").read_text())
                cfg = report["config"]
                assert cfg["seed"] == seed and cfg["num_prompts"] == 2 and cfg["samples_per_prompt"] == 1
                assert (cfg["task"], cfg["split"]) == (("text", "heldout") if key == "heldout" else (key, "val"))
                assert report["counts"]["generated_images"] == 2
                assert cfg["checkpoint"] == str(tiny_run)
    # The same prompts for every method at a given seed; other prompts at another seed.
    a = json.loads((out / "armani" / "text" / "seed1.json").read_text())
    b = json.loads((out / "no_sem2" / "text" / "seed1.json").read_text())
    assert a["prompts"] == b["prompts"] == "procedural val (seed 1)"


def test_summary_has_mean_and_std_per_metric_and_column(table_run):
    out, *_ = table_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["table"] == 2 and summary["settings"]["seeds"] == list(SEEDS)
    assert [c["key"] for c in summary["columns"]] == list(COLUMN_KEYS)
    rows = {r["name"]: r for r in summary["methods"]}
    assert list(rows) == ["armani", "no_fusion", "no_sem1", "no_sem2"]  # the table's order, none dropped
    for name in ("armani", "no_sem2"):
        row = rows[name]
        assert row["status"] == "ready" and row["pipeline"] == "ArmaniPipeline"
        assert set(row["columns"]) == set(COLUMN_KEYS)
        for key, cell in row["columns"].items():
            assert cell["status"] == "measured" and len(cell["reports"]) == len(SEEDS)
            reports = [json.loads((out / f).read_text()) for f in cell["reports"]]
            for metric in ("fid", "is.mean", "maskclip_score", "clip_score", "part_accuracy"):
                assert {"mean", "std", "n", "values"} <= set(cell["metrics"][metric]), (name, key, metric)
            for metric in ("fid", "is.mean", "maskclip_score", "part_accuracy"):
                s = cell["metrics"][metric]
                assert s["n"] == 3 and len(s["values"]) == 3, (name, key, metric)
                assert s["mean"] == pytest.approx(np.mean(s["values"]))
                assert s["std"] == pytest.approx(np.std(s["values"], ddof=1))
            assert cell["metrics"]["clip_score"]["n"] == 0  # no open_clip weights: not measured, not zero
            assert cell["metrics"]["clip_score"]["mean"] is None
            # The values are the reports' own, seed by seed.
            assert cell["metrics"]["fid"]["values"] == [r["fid"] for r in reports]
            assert cell["metrics"]["maskclip_score"]["values"] == [r["maskclip_score"] for r in reports]
            # Part accuracy = mean over the two attributes the doctored validation trusts.
            assert cell["trusted_attributes"] == ["category", "color"]
            for r, v in zip(reports, cell["metrics"]["part_accuracy"]["values"]):
                assert v == pytest.approx(np.mean([r["attributes"]["category"]["accuracy"],
                                                   r["attributes"]["color"]["accuracy"]]))
            assert cell["attributes"]["category"]["trusted"] and not cell["attributes"]["pattern"]["trusted"]
            assert cell["feature_extractor"].startswith("attribute-classifier")
    for name in ("no_fusion", "no_sem1"):
        assert rows[name]["status"] == tables.NOT_TRAINED and rows[name]["columns"] == {}
        assert f"checkpoints/{name}" in rows[name]["reason"] or name in rows[name]["reason"]
    assert (out / "part_accuracy.png").stat().st_size > 5000
    assert set(summary["grids"]) == {f"samples_{k.replace('+', '_')}.png" for k in COLUMN_KEYS}
    for name in summary["grids"]:
        assert Image.open(out / name).size[0] > 200


def test_readme_block_is_rewritten_and_nothing_else(table_run):
    _, readme, argv, *_ = table_run
    text = readme.read_text()
    start, end = text.index("<!-- table2:start -->"), text.index("<!-- table2:end -->")
    before, block, after = text[:start], text[start:end], text[end:]
    assert before == README[: README.index("<!-- table2:start -->")]  # table 1's block untouched too
    assert after == README[README.index("<!-- table2:end -->"):]
    assert "not measured yet" not in block
    assert "python research/tables.py " + " ".join(argv) in block  # the exact command
    assert "| task | method | FID ↓ | IS ↑ | MaskCLIP score ↑ | part accuracy ↑ |" in block
    assert block.count("| w/o MaskCLIP fusion | *not trained yet* |") == 4  # once per task
    assert block.count("| ARMANI | ") == 4 and "| held-out combos (text) | ARMANI |" in block
    assert " ± " in block and "part_accuracy.png" in block
    # A sample grid per column, drawn with the same loaded pipelines, linked under the table.
    for slug in ("text", "text_sketch", "text_partial", "heldout"):
        assert f"results/samples_{slug}.png" in block or f"samples_{slug}.png)" in block, slug


def test_resume_reuses_the_stored_reports(table_run, tiny_run, tiny_pipeline, classifier, tmp_path):
    out, *_ = table_run

    def must_not_run(cfg, pipe=None):
        raise AssertionError(f"re-evaluated {cfg.task} seed {cfg.seed}")

    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    methods = tables.select_methods(2, {"armani": tiny_run}, checkpoints=tmp_path / "nothing-here")
    opts = tables.TableOptions(seeds=SEEDS, num_prompts=2, samples_per_prompt=1, classifier=str(classifier))
    # The CLI run's reports, same settings: nothing is generated again.
    summary = tables.run_table(methods, opts, out=copy, pipes={"armani": tiny_pipeline}, resume=True,
                               evaluate_fn=must_not_run, progress=False, table=2)
    first = json.loads((out / "armani" / "text" / "seed0.json").read_text())
    assert summary["methods"][0]["columns"]["text"]["metrics"]["fid"]["values"][0] == first["fid"]
    # The anchor rows: read from the reports, the same for every method on a column.
    cell = summary["methods"][0]["columns"]["text"]
    assert cell["anchors"]["ceiling"]["fid"]["values"][0] == first["anchors"]["ceiling"]["fid"]
    assert cell["anchors"]["floor"]["fidelity.part_accuracy"]["mean"] in (0.0, None)
    table = tables.markdown_table(summary)
    assert "*real render of the prompt (ceiling)*" in table and "*random real garment (floor)*" in table
    # A report stored before reports carried anchors gets them without generating again, once
    # per (column, seed), and is written back.
    stored = copy / "armani" / "text" / "seed0.json"
    old = json.loads(stored.read_text())
    for key in ("anchors", "fidelity"):
        old.pop(key)
    stored.write_text(json.dumps(old))
    calls = []

    def fake_anchors(cfg, pipe):
        calls.append((cfg.task, cfg.seed))
        return {"anchors": {"ceiling": {"part_accuracy": 1.0, "fid": 1.0}, "floor": {"part_accuracy": 0.5,
                                                                                   "fid": 9.0}}, "controls": {}}

    tables.run_table(methods, opts, out=copy, pipes={"armani": tiny_pipeline}, resume=True,
                     evaluate_fn=must_not_run, anchors_fn=fake_anchors, progress=False, table=2)
    assert calls == [("text", 0)]
    again = json.loads(stored.read_text())
    assert again["anchors"]["floor"]["fid"] == 9.0 and again["fid"] == first["fid"]
    with pytest.raises(AssertionError, match="re-evaluated"):  # other settings: not reusable
        tables.run_table(methods, tables.TableOptions(seeds=(0,), num_prompts=3, samples_per_prompt=1,
                                                      classifier=str(classifier)),
                         out=copy, pipes={"armani": tiny_pipeline}, resume=True, evaluate_fn=must_not_run,
                         progress=False)


# -- without models -----------------------------------------------------------------------------
class _TextOnly:
    """Stands for the diffusion baseline: no sketch or partial tokenizer."""

    image_size = 32


def _fake_report(cfg, pipe=None) -> dict:
    offset = {"text": 0.0, "text+sketch": 1.0, "text+partial": 2.0}[cfg.task] + (5.0 if cfg.split == "heldout" else 0)
    return {"fid": 10.0 + offset + cfg.seed, "is": {"mean": 2.0, "std": 0.1}, "maskclip_score": 0.5,
            "clip_score": "unavailable", "part_accuracy": None, "attributes": {}, "trusted_attributes": [],
            "count_accuracy_when_requested": {"button": None, "pocket": 0.5}, "seconds_per_image": 0.1,
            "feature_extractor": "stub", "maskclip_judge": "stub", "classifier": None, "pipeline": "_TextOnly",
            "config": {}}


def test_aggregation_and_unsupported_columns_without_models(tmp_path):
    methods = [tables.Method("diffusion", tmp_path / "diffusion"), tables.Method("dalle", tmp_path / "dalle")]
    summary = tables.run_table(methods, tables.TableOptions(seeds=(0, 1, 2), num_prompts=1, samples_per_prompt=1),
                               out=tmp_path / "out", pipes={"diffusion": _TextOnly(), "dalle": None},
                               evaluate_fn=_fake_report, progress=False, table=1)
    diffusion, dalle = summary["methods"]
    assert dalle["status"] == tables.NOT_TRAINED and dalle["columns"] == {}
    cols = diffusion["columns"]
    assert cols["text+sketch"] == {"status": "unsupported", "reason": "_TextOnly takes no sketch"}
    assert cols["text+partial"]["status"] == "unsupported"
    fid = cols["text"]["metrics"]["fid"]
    assert fid == {"mean": 11.0, "std": 1.0, "n": 3, "values": [10.0, 11.0, 12.0]}
    assert cols["heldout"]["metrics"]["fid"]["mean"] == 16.0
    assert cols["text"]["metrics"]["part_accuracy"] == {"mean": None, "std": None, "n": 0,
                                                        "values": [None, None, None]}
    assert cols["text"]["metrics"]["count_accuracy_when_requested.pocket"]["mean"] == 0.5
    md = tables.markdown_table(summary)
    assert "| text | diffusion (diffusers UNet) | 11.0 ± 1.0 | 2.000 ± 0.000 | 0.500 ± 0.000 | — |" in md
    assert "| text + sketch | diffusion (diffusers UNet) | *n/a: _TextOnly takes no sketch* |" in md
    assert "| text | DALL·E-style (visual-only codebook) | *not trained yet* |" in md
    assert "CLIPScore" not in md.splitlines()[0]  # never measured: no column for it
    assert "**" not in md  # one measured method: nothing to compare, no bold
    assert (tmp_path / "out" / "part_accuracy.png").is_file()
    assert tables.stats([1.0]) == {"mean": 1.0, "std": None, "n": 1, "values": [1.0]}
    assert tables.format_stat(tables.stats([1.0])) == "1.000" and tables.format_stat(None) == "—"


def test_replace_block_and_cli_errors(tmp_path, capsys):
    new = tables.replace_block(README, 1, "| a | b |")
    assert new == README.replace("Table 1 is not measured yet.", "| a | b |")
    with pytest.raises(ValueError, match="no <!-- table2:start -->"):
        tables.replace_block("# nothing here\n", 2, "x")
    with pytest.raises(ValueError, match="more than one"):
        tables.replace_block(README + README, 1, "x")
    assert tables.main(["--readme", str(tmp_path / "R.md"), "--out", str(tmp_path / "o")]) == 2
    assert "give --table 1 or --table 2" in capsys.readouterr().err
    assert tables.main(["--table", "1", "--methods", "armani", "--out", str(tmp_path / "o")]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
    assert tables.main(["--table", "1", "--readme", str(tmp_path / "missing.md"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # errors come before any evaluation


def test_method_selection_and_diffusion_runs(tmp_path, monkeypatch):
    assert [m.name for m in tables.select_methods(1)] == ["armani", "dalle", "m6", "diffusion"]
    assert [m.name for m in tables.select_methods(None)] == list(tables.METHOD_LABELS)
    rows = tables.select_methods(2, {"mine": tmp_path / "x"}, checkpoints=tmp_path)
    assert [m.name for m in rows] == ["armani", "no_fusion", "no_sem1", "no_sem2", "mine"]
    assert rows[1].path == tmp_path / "no_fusion" and rows[-1].explicit
    missing = tables.Method("no_fusion", tmp_path / "no_fusion")
    assert tables.load_method(missing) is None and missing.status == tables.NOT_TRAINED
    assert "no checkpoint at" in missing.reason
    # A training run with a diffusion stage: the diffusion method opens its export.
    (tmp_path / "run" / "diffusion" / "final").mkdir(parents=True)
    (tmp_path / "run" / "diffusion" / "final" / "pipeline.json").write_text("{}")
    assert tables.resolve_checkpoint(tables.Method("diffusion", tmp_path / "run")) == tmp_path / "run/diffusion/final"
    assert tables.resolve_checkpoint(tables.Method("armani", tmp_path / "run")) == tmp_path / "run"
    # Notebooks on one model: the others are rows "not trained yet", unless named in the environment.
    monkeypatch.delenv("ARMANI_NOTEBOOK_METHODS", raising=False)
    rows = tables.notebook_methods(1, "checkpoint", tmp_path / "tiny")
    assert rows[0].path == tmp_path / "tiny" and all(m.status == tables.NOT_TRAINED for m in rows[1:])
    monkeypatch.setenv("ARMANI_NOTEBOOK_METHODS", f"dalle={tmp_path / 'd'}")
    rows = {m.name: m for m in tables.notebook_methods(1, "tiny", tmp_path / "tiny")}
    assert rows["dalle"].path == tmp_path / "d" and rows["dalle"].status == "pending"
    assert rows["m6"].status == tables.NOT_TRAINED


def test_the_committed_readme_has_both_blocks():
    text = (ROOT / "research" / "README.md").read_text()
    for table in (1, 2):
        start, end = tables.markers(table)
        assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)


def test_sampling_sweep_runs_each_setting_on_the_same_prompts(tiny_run, classifier, tmp_path, capsys):
    from research import sampling_sweep

    assert sampling_sweep.parse_setting("top_k=20,temperature=0.5,top_p=none") == {
        "top_k": 20, "temperature": 0.5, "top_p": None}
    assert sampling_sweep.parse_setting("guidance_conditions=text+sketch,top_k=5") == {
        "guidance_conditions": ("text", "sketch"), "top_k": 5}
    with pytest.raises(ValueError, match="key=value"):
        sampling_sweep.parse_setting("topk=3")
    out = tmp_path / "sweep.json"
    argv = ["--checkpoint", str(tiny_run), "--setting", "top_k=100", "--setting", "temperature=0.3,top_k=2",
            "--columns", "text", "--seeds", "0", "1", "--num-prompts", "2", "--samples-per-prompt", "1",
            "--classifier", str(classifier), "--out", str(out)]
    assert sampling_sweep.main(argv) == 0
    result = json.loads(out.read_text())
    assert [r["setting"] for r in result["rows"]] == [{"top_k": 100}, {"temperature": 0.3, "top_k": 2}]
    for row in result["rows"]:
        assert row["column"] == "text" and row["metrics"]["maskclip_score"]["n"] == 2
    # Different sampling, different images: the MaskCLIP scores of the two settings differ.
    a, b = (r["metrics"]["maskclip_score"]["values"] for r in result["rows"])
    assert a != b
    assert "| top_k=100 | text |" in capsys.readouterr().out
    assert sampling_sweep.main(["--checkpoint", str(tiny_run), "--setting", "nope=1"]) == 2

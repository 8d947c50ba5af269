"""research/bench_training.py on the tiny config: two stages (one with frozen stand-in
artefacts and pre-tokenised data), one warm-up and one timed step each. Checks the JSON's
fields and that every figure is positive and finite; no speed is asserted."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from research import bench_training  # noqa: E402

ROW_NUMBERS = ("s_per_step", "s_per_step_min", "samples_per_s", "gflop_per_step", "gflop_per_sample", "gflops",
               "share_of_bf16_peak", "share_of_fp32_peak", "share_of_best_peak", "samples_per_s_with_data")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_tiny_segmenter_and_transformer(tmp_path):
    out = tmp_path / "bench.json"
    result = bench_training.main([
        "--config", "tiny", "--stages", "segmenter,transformer", "--steps", "1", "--warmup", "1",
        "--matmul-size", "128", "--matmul-repeats", "1", "--out", str(out),
    ])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["config"] == "tiny"
    assert saved["mixed_precision"] == {"setting": "no", "resolved": "no"}
    assert saved["threads"] >= 1 and saved["steps"] == 1 and saved["warmup"] == 1
    assert _positive(saved["matmul"]["bf16_gflops"]) and _positive(saved["matmul"]["fp32_gflops"])
    assert "FlopCounterMode" in saved["flop_note"]

    rows = {r["name"]: r for r in saved["stages"]}
    assert list(rows) == ["segmenter", "transformer"]
    for row in rows.values():
        assert row["batch_size"] == 8  # tiny's batch size for both stages
        assert row["precision"] == "no"
        assert len(row["step_times_s"]) == 1
        assert _positive(row["trainable_params"])
        for key in ROW_NUMBERS:
            assert _positive(row[key]), (row["name"], key, row[key])
        assert math.isfinite(row["data_s"]) and row["data_s"] >= 0
        assert math.isfinite(row["loss"])
        assert math.isclose(row["samples_per_s"], row["batch_size"] / row["s_per_step"])
        assert math.isclose(row["share_of_bf16_peak"], row["gflops"] / saved["matmul"]["bf16_gflops"])
        m = saved["matmul"]
        assert m["best_gflops"] == max(m["bf16_gflops"], m["fp32_gflops"])
        assert m["best"] == ("bf16" if m["bf16_gflops"] >= m["fp32_gflops"] else "fp32")
        assert math.isclose(row["share_of_best_peak"], row["gflops"] / m["best_gflops"])
    # tiny's transformer has the semantic loss from step 0: one row, the semantic phase.
    assert rows["transformer"]["phase"] == "CE + semantic"


def test_rows_follow_the_phase_switches_in_the_budget():
    from armani.config import load_config

    # tiny: 6 steps a stage; the discriminator joins at step 3, the semantic loss at step 0.
    names = [c.name for c in bench_training.all_cases(load_config("tiny"))]
    assert names == ["segmenter", "maskclip", "vqgan", "vqgan+gan", "sketch_tokenizer", "partial_tokenizer",
                     "transformer", "attribute_classifier", "diffusion"]
    later = load_config("tiny", ["vqgan.gan_start_step=100", "transformer.semantic_start_step=4"])
    cases = {c.name: c for c in bench_training.all_cases(later)}
    assert "vqgan+gan" not in cases and cases["vqgan"].phase == "no GAN"
    assert (cases["transformer"].step, cases["transformer"].phase) == (0, "CE")
    assert (cases["transformer+semantic"].step, cases["transformer+semantic"].phase) == (4, "CE + semantic")
    chosen = bench_training.select_cases(later, "transformer+semantic, maskclip")
    assert [c.name for c in chosen] == ["transformer+semantic", "maskclip"]
    with pytest.raises(SystemExit, match="does not start"):
        bench_training.select_cases(later, "vqgan+gan")
    with pytest.raises(SystemExit, match="unknown row"):
        bench_training.select_cases(later, "nope")

"""The alignment report command on the tiny run: JSON with every part, a table, figures."""

import json

from armani.evaluation.alignment_report import main


def test_alignment_report_cli(tiny_run, tmp_path, capsys):
    out = tmp_path / "alignment.json"
    assert main(["--checkpoint", str(tiny_run), "--num", "48", "--out", str(out),
                 "--figure", str(tmp_path / "fig.png")]) == 0
    report = json.loads(out.read_text())
    assert report["num_pairs"] == 48
    assert 0 <= report["pointing"]["accuracy"] <= 1 and report["pointing"]["count"] > 20
    assert set(report["retrieval_predicted_masks"]) == {f"{d}@{k}" for d in ("image_to_text", "text_to_image")
                                                        for k in (1, 5, 10)}
    assert "button" in report["segmenter_iou"] and "mean" in report["segmenter_iou"]
    table = capsys.readouterr().out
    assert "overall" in table and "recall@K" in table
    assert len(list(tmp_path.glob("fig-*.png"))) == 3

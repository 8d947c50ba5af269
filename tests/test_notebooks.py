"""The research notebooks run top to bottom headless (nbclient) on the tiny run and show what they
promise: figures, tables, words per code. The committed copies carry no outputs."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_maskclip_alignment.ipynb", "02_ablations.ipynb", "03_baselines.ipynb", "04_codebook.ipynb")


def _outputs(nb) -> list[dict]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def _text(nb) -> str:
    """Everything the notebook printed or displayed as text (streams, Markdown, HTML tables)."""
    parts = []
    for o in _outputs(nb):
        if o.output_type == "stream":
            parts.append(o.text)
        elif o.output_type in ("display_data", "execute_result"):
            parts += [o.data.get(k, "") for k in ("text/markdown", "text/html", "text/plain")]
    return "\n".join(parts)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(nb))


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 5  # explained, not a script dump
    assert "pick_model()" in code[0].source  # the first code cell chooses the model


def test_pick_model_reads_the_environment(tiny_run, monkeypatch):
    monkeypatch.syspath_prepend(str(NOTEBOOKS))  # as in a kernel started in notebooks/
    common = importlib.import_module("_common")
    monkeypatch.setenv("ARMANI_NOTEBOOK_CHECKPOINT", str(tiny_run))
    monkeypatch.delenv("ARMANI_NOTEBOOK_NUM", raising=False)
    model = common.pick_model()
    assert (model.mode, model.path, model.num_eval) == ("checkpoint", tiny_run, 48)  # a tiny run: small sets
    assert model.codebooks == {"armani": tiny_run}
    assert model.pipeline().vqgan.config.image_size == 32
    monkeypatch.setenv("ARMANI_NOTEBOOK_NUM", "7")
    assert common.pick_model().num_eval == 7
    monkeypatch.setenv("ARMANI_NOTEBOOK_CHECKPOINT", str(tiny_run / "missing"))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        common.pick_model()
    monkeypatch.delenv("ARMANI_NOTEBOOK_CHECKPOINT")
    monkeypatch.setenv("ARMANI_NOTEBOOK_MODE", "huge")
    with pytest.raises(ValueError, match="'tiny' or 'shipped'"):
        common.pick_model()


def _execute(name: str, tiny_run: Path, monkeypatch) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    # The kernel inherits this environment: the tiny run, small sets, one thread, no network.
    monkeypatch.setenv("ARMANI_NOTEBOOK_CHECKPOINT", str(tiny_run))
    monkeypatch.setenv("ARMANI_NOTEBOOK_NUM", "32")
    monkeypatch.delenv("ARMANI_NOTEBOOK_MODE", raising=False)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(key, os.environ.get(key, "1"))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # kernel "python3" runs sys.executable (jupyter_client swaps the spec's bare "python"), i.e. the venv.
    NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    return nb


@pytest.mark.slow
def test_maskclip_alignment_notebook(tiny_run, monkeypatch):
    nb = _execute("01_maskclip_alignment.ipynb", tiny_run, monkeypatch)
    text = _text(nb)
    assert f"model={tiny_run}" in text and "validation garments=32" in text
    # Fig. 6 for three garments + one with the ground-truth mask, the pointing bar chart, the retrieval grid.
    assert _images(nb) >= 6
    assert text.count(" -> ") >= 3  # part words and the part each pointed at
    assert "pointing accuracy" in text and "chance" in text and "overall" in text
    assert "top-5 fully matching" in text and "red dress with a belt" in text
    assert "text_to_image@5" in text and "ground-truth masks" in text


def _check_table_notebook(text: str, tiny_run: Path, table: int) -> None:
    """What notebooks 02 and 03 share: the rows, the table over 3 seeds and 4 columns, the caveat."""
    assert f"model={tiny_run}" in text
    assert "TINY MODELS" in text and "meaningless" in text  # tiny numbers are said to be noise
    assert "measured 3 seeds x 4 prompts x 1 sample(s) per (method, task)" in text
    assert "| task | method | FID ↓ | IS ↑ | MaskCLIP score ↑ | part accuracy ↑ |" in text
    for column in ("text", "text + sketch", "text + partial", "held-out combos (text)"):
        assert f"| {column} | ARMANI | " in text
    assert "Mean ± sample std over 3 seed(s)" in text
    assert "per-attribute accuracy, column heldout" in text and "count:button" in text
    assert f"research/results/table{table}/summary.json" in text  # the script's own run, or how to make it


@pytest.mark.slow
def test_ablations_notebook(tiny_run, monkeypatch):
    nb = _execute("02_ablations.ipynb", tiny_run, monkeypatch)
    text = _text(nb)
    _check_table_notebook(text, tiny_run, 2)
    for row in ("w/o MaskCLIP fusion", "w/o semantic loss, stage 1", "w/o semantic loss, stage 2"):
        assert f"| text | {row} | *not trained yet* |" in text  # kept as rows, not dropped
    assert "DALL·E-style" not in text
    # Part accuracy + MaskCLIP bar charts, the val and held-out sample grids.
    assert _images(nb) >= 4


@pytest.mark.slow
def test_baselines_notebook(tiny_run, monkeypatch):
    nb = _execute("03_baselines.ipynb", tiny_run, monkeypatch)
    text = _text(nb)
    _check_table_notebook(text, tiny_run, 1)
    for row in ("DALL·E-style (visual-only codebook)", "M6-Fashion-style (PQ codebook, mask-predict)",
                "diffusion (diffusers UNet)"):
        assert f"| text + sketch | {row} | *not trained yet* |" in text
    assert "w/o MaskCLIP fusion" not in text
    # Two bar charts, then one sample grid per task (text, text + sketch, text + partial).
    assert _images(nb) >= 5


@pytest.mark.slow
def test_codebook_notebook(tiny_run, monkeypatch):
    nb = _execute("04_codebook.ipynb", tiny_run, monkeypatch)
    text = _text(nb)
    assert "measured on 32 validation garments" in text
    for row in ("| codebook usage %", "| perplexity", "| dead codes", "| PSNR (dB)", "| button: accuracy / IoU"):
        assert row in text
    assert "| metric | armani (cross-modal) | originals |" in text
    assert "### armani: words fused into each code" in text and "| code | uses | words |" in text
    assert "top codes (cells)" in text  # where the part words went
    # Usage histogram (with words), reconstructions, part-survival bars.
    assert _images(nb) >= 3

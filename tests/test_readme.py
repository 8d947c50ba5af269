"""The README's Python snippets run as written (on the shipped checkpoint)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _snippets():
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_a_python_snippet():
    assert _snippets()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_snippets())))
def test_readme_snippet_runs(index, tmp_path, monkeypatch):
    from armani.pipeline_protocol import shipped_checkpoint

    assert (shipped_checkpoint() / "pipeline.json").is_file(), "the shipped checkpoint is missing"
    monkeypatch.chdir(tmp_path)
    exec(compile(_snippets()[index], f"README.md snippet {index}", "exec"), {})
    assert (tmp_path / "shirt.png").is_file()

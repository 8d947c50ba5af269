"""Shared fixtures: one tiny training run (all six stages, ~15 s) reused by the pipeline,
evaluation, demo and notebook tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished ``--config tiny --stage all`` run directory."""
    run = tmp_path_factory.mktemp("tiny_run")
    cmd = [sys.executable, str(ROOT / "src" / "armani" / "train.py"), "--config", "tiny", "--stage", "all",
           "--output", str(run), f"data.cache_dir={run / 'data'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return run


@pytest.fixture(scope="session")
def tiny_run_with_stage(tiny_run, tmp_path_factory):
    """``train(stage)`` -> a copy of the tiny run with one more on-demand stage trained on top."""
    import shutil

    def train(stage: str) -> Path:
        run = tmp_path_factory.mktemp(f"{stage}_run") / "run"
        shutil.copytree(tiny_run, run)
        cmd = [sys.executable, str(ROOT / "src" / "armani" / "train.py"), "--config", "tiny", "--stage", stage,
               "--output", str(run), f"data.cache_dir={run / 'data'}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return run

    return train


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_run):
    from armani.pipeline import ArmaniPipeline

    return ArmaniPipeline.from_run(tiny_run)

"""Start demo/app.py in a subprocess on a free port and wait until it serves.

Used by the tests (tests/test_demo_api.py, tests/test_browser.py) and by demo/measure.py,
so that both exercise the app exactly as a user starts it, command line included.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

APP = Path(__file__).resolve().parent / "app.py"
READY = "ARMANI app ready on"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "GRADIO_ANALYTICS_ENABLED": "False", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningApp:
    process: subprocess.Popen
    url: str
    start_seconds: float  # from spawning the process to the app serving
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the app process (read from /proc, Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")


@contextmanager
def running_app(args: list[str], timeout: float = 600.0, threads: int | None = 1) -> Iterator[RunningApp]:
    """``python demo/app.py --port <free> *args`` until the block ends; raises with the app's log
    if it exits or does not become ready within ``timeout`` seconds."""
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="armani-app-", suffix=".log")[1])
    env = dict(os.environ, **OFFLINE_ENV)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(APP), "--host", "127.0.0.1", "--port", str(port), *args],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while READY not in log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"the app was not ready after {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        yield RunningApp(proc, f"http://127.0.0.1:{port}/", time.perf_counter() - start, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

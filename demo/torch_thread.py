"""One thread for all of the app's model work.

Why: torch's CPU kernels run on an OpenMP (libgomp) thread team, and every Python thread
that calls torch gets a team of its own. Once a process holds more OpenMP threads than there
are cores, libgomp stops spin-waiting between parallel regions (its documented throttle),
and each small kernel then pays to wake its threads: on this 2-core machine a batch-8 bf16
linear went from 50 to 112 us, and text -> 4 images from 0.76 s to 1.25 s, as soon as a second
thread had touched torch (measured with the trainer paused; see the README's latency figures).
Gradio runs handlers in a pool of worker threads, so the app loads its models, builds the
search index and runs every request on this single thread; handlers wait for it. Requests
cannot run faster side by side on two cores anyway: they take turns here, each within its
own time limit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_PREFIX = "armani-torch"
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_PREFIX)


def on_torch_thread() -> bool:
    return threading.current_thread().name.startswith(_PREFIX)


def submit(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future:
    """Queue ``fn`` on the torch thread; returns its Future."""
    return _EXECUTOR.submit(fn, *args, **kwargs)


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on the torch thread and return its result (directly when already there)."""
    if on_torch_thread():
        return fn(*args, **kwargs)
    return _EXECUTOR.submit(fn, *args, **kwargs).result()

"""A fixed number of model workers with a bounded queue in front of them.

Requests never run the model on the event loop and never start more model runs than there are workers: each
request's work (decode, predict, encode) waits in a queue for one of `workers` threads. The CPU's cores are
shared among the workers (`threads` intra-op threads each, workers x threads = the cores), so many clients at
once get the throughput of one client after another instead of fighting over the cores. A request whose client
disconnects is only dropped from the queue, or finishes in its worker and is thrown away: a worker never dies
with a request.
"""
from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .errors import RequestError

SERVICE_UNAVAILABLE = 503


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and `taskset` set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """The cores divided among the workers, at least one thread each."""
    return max(1, (cores or available_cores()) // workers)


class WorkerPool:
    """`await pool.run(function, *args)` runs `function(*args)` in one of `workers` threads.

    threads: torch's intra-op threads for each worker (set in each worker thread as it starts, and for the
        process, since torch's setting is partly process-wide).
    max_waiting: requests that may wait for a worker; one more is refused with 503 and a message to retry.
    """

    def __init__(self, workers: int = 1, *, threads: int | None = None, max_waiting: int = 64):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.threads = threads or threads_per_worker(workers)
        self.max_waiting = max_waiting
        torch.set_num_threads(self.threads)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="maskrcnn-worker",
                                            initializer=self._start_worker)
        self._slots = threading.BoundedSemaphore(workers + max_waiting)  # running + waiting

    def _start_worker(self) -> None:
        torch.set_num_threads(self.threads)
        torch.set_flush_denormal(True)  # per thread; cpu.py says why (random weights make denormals)

    def submit(self, function, *args) -> Future:
        """`function(*args)` in a worker thread, outside the queue's bound (benchmarks/serve_load.py's baseline)."""
        return self._executor.submit(function, *args)

    async def run(self, function, *args):
        if not self._slots.acquire(blocking=False):
            raise RequestError(SERVICE_UNAVAILABLE, f"the server is busy ({self.workers} requests running and "
                                                    f"{self.max_waiting} waiting); retry in a moment")
        try:
            future = self._executor.submit(function, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())  # also when cancelled before it started
        # A cancelled await (the client went away) cancels the job if it is still waiting; a running one finishes.
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

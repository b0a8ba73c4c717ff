"""Overlapping file work with inference over a folder: the next images are decoded while the model runs, and the
pictures are drawn and written behind it.

Decoding a JPEG or PNG, drawing the instances and encoding the picture hold the GIL only in part (Pillow and
numpy release it in their C loops), so a few threads keep them off the model's critical path; the model keeps
its own intra-op threads. `workers=0` does everything in the calling thread, in order (the sequential loop).
"""
from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator


class _Done(Future):
    """A future that already holds the result (or the exception) of a call made in this thread."""

    def __init__(self, call: Callable, *args):
        super().__init__()
        try:
            self.set_result(call(*args))
        except Exception as error:  # noqa: BLE001 handed to the caller through result(), as a pool's future does
            self.set_exception(error)


def prefetch(items: Iterable, read: Callable, *, workers: int = 2, ahead: int = 4) -> Iterator[tuple[object, Future]]:
    """(item, future of read(item)) in the items' order, with up to `ahead` reads started before they are asked for.

    `future.result()` returns what `read` returned or raises what it raised, so a caller handles an unreadable
    file where it would have without prefetching. workers=0: each read happens when its item is reached.
    """
    if workers <= 0:
        for item in items:
            yield item, _Done(read, item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="maskrcnn-read") as pool:
        pending = collections.deque()
        for item in items:
            pending.append((item, pool.submit(read, item)))
            if len(pending) > ahead:
                yield pending.popleft()
        while pending:
            yield pending.popleft()


class Background:
    """Runs calls in one worker thread, in order (`workers=0`: at once, in the caller's thread); `close()` waits
    for all of them and raises the first error any raised."""

    def __init__(self, workers: int = 1):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maskrcnn-write") if workers > 0 else None
        self.futures: list[Future] = []

    def submit(self, call: Callable, *args) -> None:
        if self.pool is None:
            call(*args)
        else:
            self.futures.append(self.pool.submit(call, *args))

    def close(self) -> None:
        if self.pool is None:
            return
        self.pool.shutdown(wait=True)
        for future in self.futures:
            future.result()  # raises the first failure, after every call has finished
        self.futures.clear()

    def __enter__(self) -> "Background":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

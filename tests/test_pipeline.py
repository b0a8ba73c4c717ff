"""pipeline.py: prefetched reads come back in order with their own errors; background calls all run."""
import threading
import time

import pytest

from maskrcnn.pipeline import Background, prefetch


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_prefetch_keeps_the_order_and_each_items_error(workers):
    def read(item):
        time.sleep(0.01 * (item % 3))  # later items finish first in a pool
        if item == 4:
            raise ValueError("unreadable 4")
        return item * 10

    seen = []
    for item, future in prefetch(range(8), read, workers=workers, ahead=3):
        try:
            seen.append((item, future.result()))
        except ValueError as error:
            seen.append((item, str(error)))
    assert seen == [(0, 0), (1, 10), (2, 20), (3, 30), (4, "unreadable 4"), (5, 50), (6, 60), (7, 70)]


def test_prefetch_reads_ahead_in_other_threads():
    threads = set()
    for _, future in prefetch(range(4), lambda item: threads.add(threading.current_thread().name), workers=2):
        future.result()
    assert threads and not threads & {threading.current_thread().name}


@pytest.mark.parametrize("workers", [0, 1])
def test_background_runs_every_call_in_order_and_raises_the_first_error(workers):
    done = []
    with Background(workers) as writer:
        for i in range(5):
            writer.submit(done.append, i)
    assert done == [0, 1, 2, 3, 4]

    writer = Background(workers)

    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        writer.submit(fail)
        writer.submit(done.append, 5)
        writer.close()

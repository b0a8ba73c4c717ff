"""A data set view that lets a dead data-loader worker be named, with the images it was loading.

torch reports a worker killed by the OOM killer only as "DataLoader worker (pid 123) is killed by signal";
the view records, in shared memory, each worker's pid and the last images it was given, so the trainer's
message can say which file was being read.
"""
from __future__ import annotations

import os
import re

import torch


class WorkerLog(torch.utils.data.Dataset):
    """A data set view whose data-loader workers record, in shared memory, their pid and the last images they
    were given, so that the main process can name them when a worker dies (killed by the OOM killer, ...)."""

    KEPT = 4  # last image indices kept per worker

    def __init__(self, dataset, num_workers: int):
        self.dataset = dataset
        self.pids = torch.zeros(num_workers, dtype=torch.int64).share_memory_()
        self.last = torch.full((num_workers, self.KEPT), -1, dtype=torch.int64).share_memory_()  # oldest first

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        info = torch.utils.data.get_worker_info()
        if info is not None:
            self.pids[info.id] = os.getpid()
            self.last[info.id] = torch.cat([self.last[info.id, 1:], torch.tensor([index])])
        return self.dataset[index]

    def __getattr__(self, name: str):
        if name == "dataset":  # not yet set (while unpickling in a worker): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)  # image_reference, num_instances, ... of the wrapped data set

    def describe(self, error: str) -> str:
        """'data-loader worker 0 (pid 123) died ...; the last images it was given: ...' for the worker(s) in error."""
        # torch writes "(pid 123)" or "(pid(s) 123, 456)"
        match = re.search(r"pid(?:\(s\))?\s*([\d,\s]+)", error)
        named = {int(p) for p in re.findall(r"\d+", match.group(1))} if match else set()
        workers = [w for w in range(len(self.pids)) if int(self.pids[w]) in named] or list(range(len(self.pids)))
        parts = []
        for w in workers:
            given = [self.dataset.image_reference(int(i)) for i in self.last[w].tolist() if i >= 0]
            parts.append(f"data-loader worker {w} (pid {int(self.pids[w])}) died; the last images it was given, "
                         f"the one it was loading last: {', '.join(map(repr, given)) or 'none yet'}")
        return f"{'; '.join(parts)} (torch: {error.strip()})"


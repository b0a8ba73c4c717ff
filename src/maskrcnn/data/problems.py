"""Problems found in a data set, and the log that counts what loading skipped.

A loader that works around a bad annotation (skips it, drops one polygon, clips a box) records a `Problem`
and warns with a `DataWarning` naming the file and id. At the end it warns once with the counts, and refuses
to go on when too large a share of the instances would be lost: a silently half-empty data set trains badly.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

from ..errors import DataError, DataWarning

# Past this many individual warnings per file, only the summary speaks; the Problems are all kept.
_MAX_INDIVIDUAL_WARNINGS = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data set: where (file, image id, annotation id) and what."""

    path: str | None
    message: str
    image_id: object = None
    annotation_id: object = None
    fatal: bool = False  # the data set cannot be used as it is (training refuses it)

    def __str__(self) -> str:
        where = [str(self.path)] if self.path else []
        if self.image_id is not None:
            where.append(f"image {self.image_id!r}")
        if self.annotation_id is not None:
            where.append(f"annotation {self.annotation_id!r}")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        return f"error: {text}" if self.fatal else text


class SkipLog:
    """Counts and records what loading one annotation file skipped or repaired."""

    def __init__(self, path: str, *, collect_errors: bool = False):
        self.path = path
        # False: `finish` raises one DataError naming every fatal problem; True: they are only recorded
        # (for `maskrcnn validate`, which lists everything).
        self.collect_errors = collect_errors
        self.problems: list[Problem] = []
        self.skipped_instances: Counter = Counter()  # reason -> instances dropped
        self.repairs: Counter = Counter()  # reason -> things fixed or dropped without losing the instance

    def skip(self, reason: str, message: str, *, image_id=None, annotation_id=None) -> None:
        """An instance is dropped."""
        self.skipped_instances[reason] += 1
        self._record(message, image_id, annotation_id)

    def repair(self, reason: str, message: str, *, image_id=None, annotation_id=None) -> None:
        """Part of an instance is dropped or changed, the instance stays."""
        self.repairs[reason] += 1
        self._record(message, image_id, annotation_id)

    def ignore(self, reason: str, message: str, *, image_id=None, annotation_id=None) -> None:
        """Something that is not an instance (a point, a line) is left out; it does not count as skipped."""
        self.repairs[reason] += 1
        self._record(message, image_id, annotation_id)

    def fatal(self, message: str, *, image_id=None, annotation_id=None, path: str | None = None) -> None:
        """Something that makes the data set unusable; loading goes on to find the others."""
        self.problems.append(Problem(path or self.path, message, image_id, annotation_id, fatal=True))

    @property
    def fatal_problems(self) -> list:
        return [problem for problem in self.problems if problem.fatal]

    def _record(self, message: str, image_id, annotation_id) -> None:
        problem = Problem(self.path, message, image_id, annotation_id)
        self.problems.append(problem)
        if len(self.problems) <= _MAX_INDIVIDUAL_WARNINGS:
            warnings.warn(str(problem), DataWarning, stacklevel=4)

    def raise_fatal(self) -> None:
        """One DataError listing every fatal problem, one a line (unless collect_errors)."""
        fatal = self.fatal_problems
        if fatal and not self.collect_errors:
            lines = "\n".join(f"  {_strip_error(problem)}" for problem in fatal)
            raise DataError(f"{self.path}: {len(fatal)} problem(s) make the data set unusable; fix them "
                            f"(`maskrcnn validate` lists every problem):\n{lines}")

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped_instances.values())

    def finish(self, total_instances: int, max_skip_fraction: float) -> None:
        """Raise the fatal problems (`raise_fatal`); warn once with the counts; raise DataError if more than
        `max_skip_fraction` were skipped."""
        self.raise_fatal()
        if not [problem for problem in self.problems if not problem.fatal]:
            return
        parts = [f"{n} {reason}" for reason, n in sorted(self.skipped_instances.items())]
        repairs = [f"{n} {reason}" for reason, n in sorted(self.repairs.items())]
        summary = f"{self.path}: skipped {self.num_skipped} of {total_instances} instances"
        if parts:
            summary += f" ({', '.join(parts)})"
        if repairs:
            summary += f"; repaired: {', '.join(repairs)}"
        if len(self.problems) > _MAX_INDIVIDUAL_WARNINGS:
            summary += f" ({len(self.problems) - _MAX_INDIVIDUAL_WARNINGS} more problems not shown one by one)"
        warnings.warn(summary, DataWarning, stacklevel=3)
        if total_instances and self.num_skipped / total_instances > max_skip_fraction and not self.collect_errors:
            raise DataError(
                f"{summary}: that is more than max_skip_fraction={max_skip_fraction:g} of the instances; "
                f"fix the annotations (see the warnings above or run `maskrcnn validate`), or, if the loss is "
                f"acceptable, allow it with `--max-skip-fraction {_enough(self.num_skipped / total_instances)}` "
                f"(maskrcnn train and evaluate) or max_skip_fraction={_enough(self.num_skipped / total_instances)} "
                f"(CocoDataset, ViaDataset)"
            )


def _strip_error(problem: Problem) -> str:
    return str(Problem(problem.path, problem.message, problem.image_id, problem.annotation_id))


def _enough(share: float) -> str:
    """A round fraction just above `share` (0.1234 -> "0.13"), to quote in the advice."""
    return f"{min(1.0, (int(share * 100) + 1) / 100):g}"


def without_places(message: str, *places) -> str:
    """`message` without the leading "PLACE: " parts (a path, "image 5") the caller already names."""
    stripped = True
    while stripped:
        stripped = False
        for place in places:
            prefix = f"{place}: "
            if place and message.startswith(prefix):
                message, stripped = message[len(prefix):], True
    return message


def places_of(dataset, index: int) -> tuple[str, ...]:
    """How messages about image `index` begin ("image 5", its path), for `without_places`."""
    infos = getattr(dataset, "image_info", None)
    if not infos or not 0 <= index < len(infos):
        return ()
    info = infos[index]
    return tuple(str(p) for p in (f"image {info.get('id')!r}", info.get("path")) if p)

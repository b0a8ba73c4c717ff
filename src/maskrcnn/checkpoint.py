"""Checkpoints that survive crashes: atomic save, safe load, RNG state, and a folder of per-epoch files.

Training writes one checkpoint per epoch. A crash (SIGKILL, power loss, a full disk) at any moment must
leave every file that was already complete intact, so:

* every file is written through ``files.atomic_write``: to a temporary name in the same folder, fsynced,
  and only then renamed onto its target with ``os.replace``, so a reader sees the old file or the new one,
  never half of one;
* ``last.json`` names the newest checkpoint and is rewritten (atomically too) only after that checkpoint is
  complete, so it never names a missing or partial file;
* files are read with ``torch.load(weights_only=True)`` only, which refuses pickles that would build
  arbitrary objects or run code; a checkpoint therefore holds only tensors and plain values (numbers,
  strings, lists, tuples, dicts), and RNG states are stored in that form too.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .errors import CheckpointError
from .files import atomic_write

__all__ = [
    "atomic_save",
    "load_file",
    "capture_rng_state",
    "restore_rng_state",
    "CheckpointManager",
]

POINTER_NAME = "last.json"
# epoch_0003.pt: 3 epochs complete; epoch_0003_step_00000250.pt: step 250, taken during epoch 3.
_CHECKPOINT_RE = re.compile(r"^epoch_(\d{4,})(?:_step_(\d{8,}))?\.pt$")
# torch's reader reports a damaged file with any of these, depending on where the damage is.
# A file that is not a torch file at all can also stop the reader with IndexError or KeyError (e.g. plain text).
_CORRUPTION_ERRORS = (RuntimeError, EOFError, ValueError, IndexError, KeyError, zipfile.BadZipFile, pickle.UnpicklingError, OSError)
# Types torch.load(weights_only=True) rebuilds; only used to point at the offending value in an error message
# (the real check is torch's own loader, see _verify_loadable).
_PLAIN_LEAVES = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


# ----------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------
def _find_unsupported(obj: Any, where: str = "obj") -> str | None:
    """Where the first value torch.load(weights_only=True) would likely refuse sits, e.g. "obj['cfg']['lr']"."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN_LEAVES:
        return None
    if isinstance(obj, dict):
        for key, value in obj.items():
            found = _find_unsupported(key, f"{where} key {key!r}") or _find_unsupported(value, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if type(obj) in (list, tuple, set):
        for i, value in enumerate(obj):
            found = _find_unsupported(value, f"{where}[{i}]")
            if found:
                return found
        return None
    return f"{where} (a {type(obj).__module__}.{type(obj).__qualname__})"


def _verify_loadable(obj: Any, target: Path) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        # Read the file back with the loader that will read it later. mmap=True maps the tensor data instead
        # of reading it, so this costs milliseconds even for a large checkpoint, yet runs torch's real
        # weights_only allow-list over every pickled object.
        try:
            loaded = torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as err:
            where = _find_unsupported(obj)
            hint = f" The first such value is {where}." if where else ""
            raise CheckpointError(
                f"cannot save checkpoint '{target}': it contains values that torch.load(weights_only=True) "
                f"refuses to read back ({_weights_only_detail(err)}).{hint} Store only tensors, numbers, "
                f"strings, lists, tuples and dicts (e.g. float(x) for numpy scalars, torch.from_numpy(a) "
                f"for arrays, dataclasses.asdict(cfg) for configs). '{target}' was not changed."
            ) from err
        del loaded  # drop the memory map before the rename (Windows cannot rename a mapped file)

    return check


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` such that ``path`` holds either its old content or all of ``obj``, never a mix.

    The data goes to a temporary file in the same folder, is fsynced and read back with
    ``torch.load(weights_only=True)`` (so a checkpoint that could not be loaded safely is never written),
    then ``os.replace`` puts it at ``path`` and the folder is fsynced. On any failure the temporary file is
    removed and an existing file at ``path`` is untouched.

    Raises:
        CheckpointError: ``obj`` cannot be pickled or holds values a weights-only load refuses, or the disk
            write failed (the message names ``path`` and the cause).
    """
    path = Path(path)
    try:
        atomic_write(path, lambda f: torch.save(obj, f), check=_verify_loadable(obj, path))
    except CheckpointError:
        raise
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"cannot save checkpoint '{path}': the state cannot be pickled ({type(err).__name__}: {err}); "
            f"'{path}' was not changed."
        ) from err
    except OSError as err:
        raise CheckpointError(
            f"cannot save checkpoint '{path}': writing failed ({err}); '{path}' was not changed."
        ) from err


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------
def _weights_only_detail(err: BaseException) -> str:
    # torch's message is a long paragraph; the useful part is what follows "WeightsUnpickler error:".
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
        text = text.split("Check the documentation", 1)[0]
    detail = " ".join(text.split())
    return detail[:300] or type(err).__name__


def load_file(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`atomic_save` with ``torch.load(weights_only=True)``.

    Never unpickles arbitrary objects: a file that asks for them is refused, not executed.

    Raises:
        CheckpointError: the file is missing, empty, truncated or corrupted, holds code/objects other than
            plain tensors and values, or does not hold a dict (the message names the file and the problem).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"cannot load checkpoint '{path}': the file does not exist.")
    if path.is_dir():
        raise CheckpointError(f"cannot load checkpoint '{path}': it is a folder, not a checkpoint file.")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"cannot load checkpoint '{path}': the file is empty (0 bytes); it was cut off while being written "
            f"or copied."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, *_CORRUPTION_ERRORS) as err:
        foreign = _not_a_torch_file(path)
        if foreign is None:
            raise _load_error(path, size, err) from err
        raise CheckpointError(
            f"cannot load '{path}': it is not a checkpoint or model file (torch.save writes a zip archive or "
            f"a pickle; this is {foreign}). Give the .pt file written by `maskrcnn train` or `maskrcnn.save`."
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"cannot load checkpoint '{path}': it holds a {type(state).__name__}, but a checkpoint is a dict "
            f"(model weights, optimiser state, ...)."
        )
    return state


# The first bytes of files that torch.save writes: a zip archive (since torch 1.6) or a pickle (protocol 2+).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
_OTHER_KINDS = {b"\x89HDF": "an HDF5 file (matterport .h5 weights are read from a file ending in .h5)",
                b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"{": "a JSON file", b"[": "a JSON file"}


def _not_a_torch_file(path: Path) -> str | None:
    """None when `path` starts like a file torch.save writes; else what it looks like ("a text file ...")."""
    try:
        with open(path, "rb") as file:
            head = file.read(64)
    except OSError:
        return None  # unreadable: the loader's own error says why
    if head.startswith(_TORCH_MAGIC):
        return None
    for magic, kind in _OTHER_KINDS.items():
        if head.startswith(magic):
            return kind
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"a binary file starting with {head[:8]!r}"
    first_line = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"a text file starting with {first_line!r}"


def _load_error(path: Path, size: int, err: BaseException) -> CheckpointError:
    """The message for a file that starts like a torch file but does not load."""
    if isinstance(err, pickle.UnpicklingError):
        if "Weights only load failed" not in str(err):
            return CheckpointError(
                f"cannot load checkpoint '{path}': the file ({size} bytes) is corrupted (UnpicklingError: "
                f"{_first_line(err)})."
            )
        return CheckpointError(
            f"refused to load '{path}': it contains code/objects that are not plain tensors and values "
            f"({_weights_only_detail(err)}). Loading it would let the file run code, so it is not loaded; "
            f"if it is meant to be a checkpoint of ours, it is damaged or was written by other software."
        )
    if isinstance(err, (PermissionError, IsADirectoryError)):
        return CheckpointError(f"cannot load checkpoint '{path}': the file cannot be read ({err}).")
    return CheckpointError(
        f"cannot load checkpoint '{path}': the file ({size} bytes) is truncated or corrupted "
        f"({type(err).__name__}: {_first_line(err)})."
    )


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__


def _is_readable(path: Path) -> bool:
    # Structural check (zip directory + pickle) without reading tensor data; used only on the error path to
    # tell the user which older checkpoint still works.
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except _CORRUPTION_ERRORS:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# Random number generator state
# ----------------------------------------------------------------------------------------------------------
def capture_rng_state() -> dict:
    """The state of Python's ``random``, numpy's global RandomState and torch's CPU (and CUDA) generators.

    Everything is a tensor, int, float, str, None, list or dict, so it survives
    ``torch.load(weights_only=True)``.
    """
    py_version, py_internal, py_gauss_next = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached_gaussian = np.random.get_state(legacy=True)
    state = {
        # Mersenne Twister: 624 words + a position (625 ints, each < 2**32, so int64 holds them exactly).
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss_next,
        },
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),  # (624,) uint32 words widened to int64
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached_gaussian),
        },
        "torch": torch.get_rng_state(),  # (5056,) uint8
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()  # one uint8 tensor per visible device
    return state


def restore_rng_state(state: dict) -> None:
    """Put back what :func:`capture_rng_state` returned (also after a save/load round trip).

    Raises:
        CheckpointError: the state lacks a part or a part has the wrong form.
    """
    try:
        py = state["python"]
        random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
        nps = state["numpy"]
        np.random.set_state((
            str(nps["kind"]),
            nps["keys"].cpu().numpy().astype(np.uint32),
            int(nps["pos"]),
            int(nps["has_gauss"]),
            float(nps["cached_gaussian"]),
        ))
        # .cpu(): a checkpoint loaded with map_location="cuda" moves these tensors too, but the generators
        # only accept CPU byte tensors.
        torch.set_rng_state(state["torch"].cpu())
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise CheckpointError(
            f"the RNG state in this checkpoint is unusable ({type(err).__name__}: {err}); expected the dict "
            f"made by capture_rng_state() with parts 'python', 'numpy' and 'torch'."
        ) from err
    cuda_states = state.get("torch_cuda")
    if cuda_states and torch.cuda.is_available():
        # Resuming on a machine with fewer GPUs is legitimate: restore the devices both machines have.
        for device, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)


# ----------------------------------------------------------------------------------------------------------
# A folder of per-epoch checkpoints
# ----------------------------------------------------------------------------------------------------------
class CheckpointManager:
    """``epoch_0001.pt``, ``epoch_0002.pt``, ... in one folder, plus ``last.json`` naming the newest.

    Args:
        directory: the folder (created when missing).
        keep: keep only the newest ``keep`` checkpoints (by epoch); ``None`` keeps all. The checkpoint that
            ``last.json`` names is never deleted.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int | None = None) -> None:
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"CheckpointManager keep must be None or an int >= 1, got {keep!r}")
        self.directory = Path(directory)
        self.keep = keep
        self.extra: dict = {}  # plain values written into every checkpoint besides the state (runs.train: categories)

    @property
    def pointer_path(self) -> Path:
        return self.directory / POINTER_NAME

    def path_for(self, epoch: int, step: int | None = None) -> Path:
        """``epoch_0003.pt`` after epoch 3; ``epoch_0003_step_00000250.pt`` for step 250 taken during epoch 3."""
        return self.directory / (f"epoch_{epoch:04d}.pt" if step is None else f"epoch_{epoch:04d}_step_{step:08d}.pt")

    def save(self, state: dict, epoch: int, *, step: int | None = None) -> Path:
        """Write ``state`` as ``path_for(epoch, step)``, then point ``last.json`` at it, then prune.

        The order is what makes a crash harmless: until the checkpoint is complete and renamed into place,
        ``last.json`` still names the previous one.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"checkpoint epoch must be an int >= 0, got {epoch!r}")
        if not isinstance(state, dict):
            raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(epoch, step)
        atomic_save({**self.extra, **state}, path)
        pointer = {
            "path": path.name,  # relative, so the folder can be moved or copied elsewhere
            "epoch": epoch,
            "bytes": path.stat().st_size,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        data = (json.dumps(pointer, indent=2) + "\n").encode("utf-8")
        try:
            atomic_write(self.pointer_path, lambda f: f.write(data))
        except OSError as err:
            raise CheckpointError(
                f"checkpoint '{path}' was written, but updating '{self.pointer_path}' failed ({err}); "
                f"it still names the previous checkpoint."
            ) from err
        if self.keep is not None:
            self._prune(protected=path)
        return path

    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoint files in the folder, oldest first (temporary files are not listed): by epoch,
        and within an epoch its step checkpoints before the one that completes it."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            match = _CHECKPOINT_RE.match(entry.name)
            if match and entry.is_file():
                step = int(match.group(2)) if match.group(2) else float("inf")
                found.append((int(match.group(1)), step, entry))
        return [entry for _, _, entry in sorted(found)]

    def latest(self) -> Path | None:
        """The checkpoint ``last.json`` names; if that is missing or unreadable, the newest by epoch; else None."""
        named = self._pointer_target()
        if named is not None and named.is_file():
            return named
        # No usable pointer (first save was killed before the pointer was written, or someone deleted files):
        # every epoch_*.pt got its name by an atomic rename, so the newest one is complete too.
        checkpoints = self.list_checkpoints()
        return checkpoints[-1] if checkpoints else None

    def load_latest(self, map_location: Any = "cpu") -> dict | None:
        """Load :meth:`latest`; ``None`` when there is no checkpoint yet.

        Raises:
            CheckpointError: the latest checkpoint is damaged; the message names it, names the newest older
                checkpoint that still loads, and lists what the folder holds.
        """
        path = self.latest()
        if path is None:
            return None
        try:
            return load_file(path, map_location=map_location)
        except CheckpointError as err:
            raise CheckpointError(f"{err} {self._recovery_hint(path)}") from err

    # -- helpers ---------------------------------------------------------------------------------------
    def _pointer_target(self) -> Path | None:
        try:
            pointer = json.loads(self.pointer_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, or edited by hand into something that is not JSON
            return None
        name = pointer.get("path") if isinstance(pointer, dict) else None
        # Only a bare checkpoint name in this folder: a pointer must not lead to "../somewhere/else.pt".
        if not isinstance(name, str) or not _CHECKPOINT_RE.match(name):
            return None
        return self.directory / name

    def _recovery_hint(self, damaged: Path) -> str:
        others = [p for p in self.list_checkpoints() if p != damaged]
        listing = ", ".join(p.name for p in self.list_checkpoints()) or "none"
        for candidate in reversed(others):  # newest first
            if _is_readable(candidate):
                return (
                    f"The previous good checkpoint is '{candidate}': resume from it with "
                    f"load_file('{candidate}'), or delete '{damaged.name}' and load_latest() will pick it up. "
                    f"Checkpoints in '{self.directory}': {listing}."
                )
        return f"No other checkpoint in '{self.directory}' loads either. Checkpoints there: {listing}."

    def _prune(self, protected: Path) -> None:
        keep = set(self.list_checkpoints()[-self.keep:])
        keep.add(protected)
        named = self._pointer_target()
        if named is not None:
            keep.add(named)
        for path in self.list_checkpoints():
            if path not in keep:
                path.unlink(missing_ok=True)

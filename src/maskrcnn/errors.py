"""Our own exception types: every user-facing failure names the file, id and field, and says what to do, so that
the person running a command can fix the input without reading a traceback."""
from __future__ import annotations


class MaskRCNNError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(MaskRCNNError, ValueError):
    """A configuration value is impossible (names the field and the allowed range)."""


class DataError(MaskRCNNError, ValueError):
    """A data set file, image or annotation is unusable (names the file and the image or annotation id)."""


class CheckpointError(MaskRCNNError):
    """A checkpoint or weights file cannot be read or does not fit the model (names the file)."""


class TrainingError(MaskRCNNError):
    """Training cannot go on (a non-finite loss names the step and each loss value)."""


class DataWarning(UserWarning):
    """A data problem that was worked around: an annotation skipped or clipped (names the file and id)."""


class MissingDependencyError(MaskRCNNError, ImportError):
    """An optional package is not installed (names the package and the `pip install` line of its extra)."""


def require_optional(module: str, *, needed_for: str, extra: str):
    """Import the optional package `module`, or raise MissingDependencyError saying what needs it and
    which extra installs it (`needed_for`: "ONNX export ... need the optional packages onnx and onnxruntime")."""
    try:
        return __import__(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{needed_for} ({module} cannot be imported: {error}); install them with: pip install \"maskrcnn[{extra}]\""
        ) from error


class DistributedError(TrainingError):
    """Distributed training stopped on every rank (names the failing rank(s), what they were doing and their error)."""

"""TensorBoard event files beside the JSON-lines log: losses, learning rate, validation metrics and a few
validation pictures, through `torch.utils.tensorboard` (the `tensorboard` package, extra
`maskrcnn[tensorboard]`). The JSON-lines log stays the source of truth; without the extra nothing is written
and one line says how to get it.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path

INSTALL_HINT = "TensorBoard logging is off: the tensorboard package is not installed (pip install 'maskrcnn[tensorboard]')"


class TensorBoardLog:
    """Writes scalars and pictures into `log_dir`; a no-op (after one reported line) without tensorboard."""

    def __init__(self, log_dir, *, report=print):
        self.log_dir = Path(log_dir)
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            report(INSTALL_HINT)
            return
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    @property
    def command(self) -> str:
        """The command that shows these files."""
        return f"tensorboard --logdir {self.log_dir}"

    def add_record(self, record: dict) -> None:
        """One JSON-lines record (a training step's losses and lr, or a validation's "val_*" metrics) as
        scalars at its step: train/NAME, lr, val/NAME; None and NaN are left out."""
        if self.writer is None:
            return
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key in ("step", "epoch", "seconds") or isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            if not math.isfinite(value):
                continue
            if key == "lr":
                tag = "lr"
            elif key.startswith("val_"):
                tag = f"val/{key[4:]}"
            else:
                tag = f"train/{key}"
            self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def add_pictures(self, step: int, pictures) -> None:
        """Validation pictures ((H, W, 3) uint8 each) as images val/picture_N at the step."""
        if self.writer is None:
            return
        for number, picture in enumerate(pictures):
            self.writer.add_image(f"val/picture_{number}", picture, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

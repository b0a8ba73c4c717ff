"""Ultralytics YOLO segmentation data sets: a data.yaml and one label text file per image.

    path: ../datasets/shapes      # root; relative to the YAML file's folder (default: that folder)
    train: images/train           # a folder of images, a .txt list of images, or a list of either
    val: images/val
    names: [cat, dog]             # or {0: cat, 1: dog}

The labels of root/images/train/a.jpg are in root/labels/train/a.txt (the last "images" folder of the path
becomes "labels"), one instance a line: `class x1 y1 x2 y2 ...`, coordinates normalised to [0, 1] by the
image's width and height; a line of 5 numbers is a box `class cx cy w h`. An image without a label file has no
instances. YOLO's class c is category c + 1 here (source "yolo"), since 0 is background inside the library.

Shape letters: H, W: the image's height and width.
"""
from __future__ import annotations

import os

from ..errors import DataError
from .images import IMAGE_SUFFIXES, image_size
from .instances import AnnotatedDataset, ImageRecord, Instance, rectangle_polygon
from .problems import SkipLog


class YoloDataset(AnnotatedDataset):
    """One split of a YOLO data set; image ids are image paths relative to the data set root."""

    source = "yolo"

    def __init__(self, yaml_file, split: str = "train", *, max_skip_fraction: float = 0.05,
                 allow_empty: bool = False, collect_errors: bool = False):
        super().__init__()
        self.yaml_file = self.annotation_file = os.fspath(yaml_file)
        config = _read_yaml(self.yaml_file)
        names = config.get("names")
        if isinstance(names, dict):
            if not all(isinstance(k, int) for k in names) or sorted(names) != list(range(len(names))):
                raise DataError(f"{self.yaml_file}: 'names' keys must be the class numbers 0..{len(names) - 1}, "
                                f"got {sorted(names, key=str)}")
            names = [names[k] for k in range(len(names))]
        if not isinstance(names, list) or not names:
            raise DataError(f"{self.yaml_file}: 'names' must be a list of class names or a dict {{0: name, ...}}")
        names = [str(name) for name in names]
        root = config.get("path") or "."
        self.image_dir = os.path.normpath(os.path.join(os.path.dirname(self.yaml_file), str(root)))
        if split not in config or not config[split]:
            raise DataError(f"{self.yaml_file}: no {split!r} split (splits here: "
                            f"{[k for k in ('train', 'val', 'test') if config.get(k)]})")
        images = self._images(config[split])
        if not images:
            raise DataError(f"{self.yaml_file}: split {split!r} ({config[split]!r}) holds no image")
        log = SkipLog(self.yaml_file, collect_errors=collect_errors)
        records = [record for path in images if (record := self._record(path, names, log)) is not None]
        self._finish(records, names, log, max_skip_fraction=max_skip_fraction, allow_empty=allow_empty,
                     what=f"{self.yaml_file} ({split})", source_ids=list(range(1, len(names) + 1)))

    def _images(self, entries) -> list:
        paths = []
        for entry in entries if isinstance(entries, list) else [entries]:
            where = os.path.join(self.image_dir, str(entry))
            if os.path.isdir(where):
                paths += sorted(os.path.join(folder, name) for folder, _, names in os.walk(where)
                                for name in names if name.lower().endswith(IMAGE_SUFFIXES))
            elif os.path.isfile(where) and where.endswith(".txt"):
                with open(where, encoding="utf-8") as file:
                    paths += [os.path.normpath(os.path.join(self.image_dir, line.strip()))
                              for line in file if line.strip()]
            else:
                raise DataError(f"{self.yaml_file}: {entry!r} is not a folder or a .txt list under {self.image_dir}")
        return paths

    def _record(self, path: str, names: list, log: SkipLog):
        image_id = os.path.relpath(path, self.image_dir)
        try:
            height, width = image_size(path)
        except DataError as error:
            log.fatal(f"cannot read the image size ({error})", image_id=image_id)
            return None
        label_file = label_path(path)
        instances = []
        if os.path.isfile(label_file):
            with open(label_file, encoding="utf-8") as file:
                lines = file.read().splitlines()
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    instance = _line(line, number, label_file, names, height, width, log, image_id)
                    if instance is not None:
                        instances.append(instance)
        return ImageRecord(image_id, path, height, width, instances)


def label_path(image_path: str) -> str:
    """root/images/train/a.jpg -> root/labels/train/a.txt (Ultralytics' img2label_paths)."""
    head, _, tail = image_path.rpartition(f"{os.sep}images{os.sep}")
    base = f"{head}{os.sep}labels{os.sep}{tail}" if head else image_path
    return os.path.splitext(base)[0] + ".txt"


def _line(line: str, number: int, label_file: str, names: list, height: int, width: int, log: SkipLog,
          image_id):
    ids = {"image_id": image_id, "annotation_id": f"{os.path.basename(label_file)} line {number}"}
    fields = line.split()
    try:
        class_index = int(fields[0])
        values = [float(v) for v in fields[1:]]
    except ValueError:
        log.skip("bad lines", f"line {line.strip()!r} is not `class x1 y1 x2 y2 ...`; skipped", **ids)
        return None
    if not 0 <= class_index < len(names):
        log.fatal(f"class {class_index} is outside 0..{len(names) - 1} of 'names'", **ids)
        return None
    if len(values) == 4:  # a detection box: cx cy w h
        cx, cy, w, h = values
        if w <= 0 or h <= 0:
            log.skip("bad boxes", f"box has zero or negative size {w:g}x{h:g}; skipped", **ids)
            return None
        polygon = rectangle_polygon((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                                    (cy + h / 2) * height)
        return Instance(ids["annotation_id"], names[class_index], polygons=[polygon])
    if len(values) < 6 or len(values) % 2:
        log.skip("bad polygons", f"polygon has {len(values)} coordinates; needs an even number, at least 6; "
                 f"skipped", **ids)
        return None
    if any(v < -0.01 or v > 1.01 for v in values):
        log.repair("coordinates outside [0, 1]", "coordinates outside [0, 1] (are they in pixels, not "
                   "normalised?); the parts outside the image are cut off", **ids)
    polygon = [v * (width if i % 2 == 0 else height) for i, v in enumerate(values)]
    return Instance(ids["annotation_id"], names[class_index], polygons=[polygon])


def _read_yaml(path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        raise DataError(f"{path}: YOLO data.yaml not found")
    try:
        with open(path, encoding="utf-8") as file:
            config = yaml.safe_load(file)
    except yaml.YAMLError as error:
        raise DataError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a YAML mapping with 'names' and 'train' / 'val'")
    return config

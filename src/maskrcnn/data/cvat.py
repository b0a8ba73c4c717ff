"""CVAT for images 1.1 XML annotations (CVAT's "CVAT for images" export).

    <annotations><meta>... <labels><label><name>cat</name>...</label></labels> ...</meta>
      <image id="0" name="a.jpg" width="640" height="480">
        <polygon label="cat" occluded="0" points="x,y;x,y;..." z_order="0"/>
        <box label="cat" occluded="1" xtl="..." ytl="..." xbr="..." ybr="..." z_order="0"/>
        <mask label="cat" rle="3, 5, 2, ..." left="10" top="20" width="30" height="40" z_order="1"/>
      </image>
    </annotations>

A mask's `rle` is run lengths over its left/top/width/height box, row by row, starting with a run of background.
Classes are the labels of <meta>, in order, with source ids 1..K (source "cvat"). `occluded` and the shape's
<attribute> children are kept in the instance's attributes. Where shapes of different `z_order` overlap, the
higher one is on top: the pixels it covers are taken from the lower ones, as CVAT draws them. Polylines, points,
ellipses (CVAT 2) and tags are skipped with a warning.

Shape letters: H, W: the image's height and width; h, w: a mask's box.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import DataError
from .instances import AnnotatedDataset, ImageRecord, Instance, mask_to_rle, paste_mask, rectangle_polygon
from .paths import join_inside
from .problems import SkipLog

_AREA_SHAPES = ("polygon", "box", "mask")
_SKIPPED_SHAPES = ("polyline", "points", "ellipse", "cuboid", "skeleton", "tag")


class CvatDataset(AnnotatedDataset):
    """Images and shapes of one CVAT for images 1.1 XML file; image ids are CVAT's image ids."""

    source = "cvat"

    def __init__(self, xml_file, image_dir=None, *, max_skip_fraction: float = 0.05, allow_empty: bool = False,
                 collect_errors: bool = False):
        super().__init__()
        self.annotation_file = os.fspath(xml_file)
        self.image_dir = os.fspath(image_dir) if image_dir is not None else _default_image_dir(self.annotation_file)
        root = _read_xml(self.annotation_file)
        log = SkipLog(self.annotation_file, collect_errors=collect_errors)
        names = [name.text.strip() for label in root.iter("label") if (name := label.find("name")) is not None
                 and name.text and name.text.strip()]
        names = list(dict.fromkeys(names))  # a label listed in both project and task meta counts once
        records = [record for number, image in enumerate(root.iter("image"))
                   if (record := self._image(image, number, names, log)) is not None]
        if not names:  # no <meta> labels: the labels used, sorted
            names = sorted({instance.class_name for record in records for instance in record.instances})
        self._finish(records, names, log, max_skip_fraction=max_skip_fraction, allow_empty=allow_empty,
                     what=self.annotation_file)

    def _image(self, element, number: int, names: list, log: SkipLog):
        image_id = element.get("id", f"#{number}")
        try:
            image_id = int(image_id)
        except ValueError:
            pass
        name = element.get("name")
        try:
            width, height = int(element.get("width", "")), int(element.get("height", ""))
        except ValueError:
            log.fatal(f"<image name={name!r}> needs whole-number width and height attributes, got "
                      f"width={element.get('width')!r} height={element.get('height')!r}", image_id=image_id)
            return None
        try:
            path = join_inside(self.image_dir, name, where=f"{self.annotation_file}: image {image_id!r}")
        except DataError as error:
            log.fatal(str(error).split(": ", 2)[-1], image_id=image_id)
            return None
        instances, z_orders = [], []
        for index, shape in enumerate(element):
            ids = {"image_id": image_id, "annotation_id": f"{shape.tag} {index}"}
            if shape.tag in _SKIPPED_SHAPES:
                log.ignore("shapes without area ignored", f"<{shape.tag}> is not an area shape; skipped", **ids)
                continue
            if shape.tag not in _AREA_SHAPES:
                continue
            label = shape.get("label")
            if label not in names and names:
                log.fatal(f"label {label!r} is not among the labels of <meta> {names}", **ids)
                continue
            instance = _shape(shape, label, height, width, log, ids)
            if instance is not None:
                instances.append(instance)
                z_orders.append(_number(shape.get("z_order"), 0))
        _occlude_by_z_order(instances, z_orders, height, width)
        return ImageRecord(image_id, path, height, width, instances)


def _shape(shape, label: str, height: int, width: int, log: SkipLog, ids: dict):
    attributes = {"occluded": shape.get("occluded") == "1"}
    attributes.update({a.get("name"): a.text for a in shape.findall("attribute")})
    if shape.tag == "polygon":
        try:
            points = [float(v) for pair in shape.get("points", "").split(";") if pair for v in pair.split(",")]
        except ValueError:
            points = []
        if len(points) < 6 or len(points) % 2:
            log.skip("bad polygons", f"polygon needs at least 3 x,y points, got {shape.get('points')!r}; skipped",
                     **ids)
            return None
        return Instance(ids["annotation_id"], label, polygons=[points], attributes=attributes)
    if shape.tag == "box":
        corners = [_number(shape.get(key), None) for key in ("xtl", "ytl", "xbr", "ybr")]
        if None in corners:
            log.skip("bad boxes", "box needs numbers xtl, ytl, xbr, ybr; skipped", **ids)
            return None
        if corners[2] <= corners[0] or corners[3] <= corners[1]:
            log.skip("bad boxes", f"box {corners} has zero or negative width or height; skipped", **ids)
            return None
        return Instance(ids["annotation_id"], label, polygons=[rectangle_polygon(*corners)], attributes=attributes)
    # <mask>: row-major run lengths over its box, starting with background
    box = [_number(shape.get(key), None) for key in ("left", "top", "width", "height")]
    try:
        counts = [int(float(v)) for v in shape.get("rle", "").split(",") if v.strip()]
    except ValueError:
        counts = None
    if None in box or counts is None or any(c < 0 for c in counts):
        log.skip("bad masks", "mask needs numbers left, top, width, height and an rle of whole numbers; skipped",
                 **ids)
        return None
    left, top, box_width, box_height = (int(round(v)) for v in box)
    if sum(counts) != box_width * box_height:
        log.skip("bad masks", f"mask rle counts sum to {sum(counts)}, not width*height = {box_width}*{box_height}"
                 f" = {box_width * box_height}; skipped", **ids)
        return None
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate background, foreground, ...
    part = np.repeat(values, counts).reshape(box_height, box_width)  # (h, w)
    return Instance(ids["annotation_id"], label, rle=mask_to_rle(paste_mask(part, left, top, height, width)),
                    attributes=attributes)


def _occlude_by_z_order(instances: list, z_orders: list, height: int, width: int) -> None:
    """Remove from each instance the pixels of overlapping instances with a higher z_order (in place)."""
    if len(set(z_orders)) < 2:
        return
    order = sorted(range(len(instances)), key=lambda i: -z_orders[i])  # top first
    covered = np.zeros((height, width), dtype=bool)
    level_cover = np.zeros((height, width), dtype=bool)
    current = None
    for i in order:
        if z_orders[i] != current:  # shapes of one z_order do not hide each other
            covered |= level_cover
            level_cover = np.zeros((height, width), dtype=bool)
            current = z_orders[i]
        mask = mask_utils.decode(instances[i].to_rle(height, width)).astype(bool)
        level_cover |= mask
        if (mask & covered).any():
            instances[i].rle = mask_to_rle(mask & ~covered)
            instances[i].polygons = None


def _number(text, default):
    try:
        return float(text)
    except (TypeError, ValueError):
        return default


def _default_image_dir(xml_file: str) -> str:
    """The XML file's folder, or its images/ subfolder as CVAT's export zip lays it out."""
    folder = os.path.dirname(xml_file)
    images = os.path.join(folder, "images")
    return images if os.path.isdir(images) else folder


def _read_xml(path: str):
    if not os.path.isfile(path):
        raise DataError(f"{path}: CVAT XML file not found")
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise DataError(f"{path}: not valid XML ({error})") from error
    if root.tag != "annotations":
        raise DataError(f"{path}: the root element is <{root.tag}>, not <annotations> (is this a CVAT for images "
                        f"1.1 export?)")
    return root

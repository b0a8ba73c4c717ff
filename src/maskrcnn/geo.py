"""Georeferenced images: where a GeoTIFF's pixels lie on the ground, and detections written there as GeoJSON
(`maskrcnn predict --format geojson`).

Georeferencing is read from a TIFF's GeoTIFF tags (ModelPixelScale, ModelTiepoint, ModelTransformation,
GeoKeyDirectory) through rasterio (the `geo` extra: pip install 'maskrcnn[geo]'). Whether a file has such tags is
told by tifffile, so rasterio is imported only for files that have them, and a GeoTIFF met without rasterio is
a clear error rather than pixel coordinates passed off as map coordinates. Other files (PNG, JPEG, a TIFF without
the tags) have no georeferencing here.

Coordinates. Polygons are traced in pixel-edge coordinates (polygons.py: pixel (r, c) covers [c, c+1] x [r, r+1]),
which is GDAL's and rasterio's convention for the affine geotransform (PixelIsArea: `transform * (0, 0)` is the
outer corner of the first pixel), so a vertex (x, y) lies at `transform * (x, y)` on the map:
X = a x + b y + c, Y = d x + e y + f.

The GeoJSON written. One FeatureCollection per image, one Feature per detection: a Polygon, or a MultiPolygon
for an object in several pieces (outer boundaries; holes are not kept), with properties class_name,
category_id (the model's data set's own id, categories.py) and score. RFC 7946 allows only WGS 84
longitude/latitude; we keep the image's own coordinate reference system instead, so the polygons lie on the
raster in a GIS without reprojection (and a 0.5 m UTM grid stays a metre grid), and name it with the "crs"
member of the 2008 GeoJSON specification, which GDAL, QGIS and GeoPandas read:
`{"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}`, or the CRS's WKT as the name when it
has no EPSG code. An image without a coordinate reference system gets pixel coordinates (x right, y down) and
no "crs" member. Rings are closed and wound counterclockwise in the coordinates written (positive shoelace area;
RFC 7946's right-hand rule for map coordinates with north up).

Shape letters: K: a polygon's points.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import categories
from .data.images import TIFF_SUFFIXES
from .errors import DataError, DataWarning, require_optional
from .polygons import TOLERANCE, outlines
from .structures import Detections

GEOTIFF_TAGS = (33550, 33922, 34264, 34735)  # ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory


@dataclass(frozen=True)
class Georeference:
    """Where an image lies on the map.

    transform: the affine geotransform (a, b, c, d, e, f) in rasterio's (affine's) order: pixel-edge (x, y) ->
               map (a x + b y + c, d x + e y + f)
    crs_wkt:   the coordinate reference system as OGC WKT
    epsg:      its EPSG code, None when it has none
    """

    transform: tuple[float, float, float, float, float, float]
    crs_wkt: str
    epsg: int | None

    def crs_member(self) -> dict:
        """The GeoJSON 2008 "crs" member naming this CRS."""
        name = f"urn:ogc:def:crs:EPSG::{self.epsg}" if self.epsg is not None else self.crs_wkt
        return {"type": "name", "properties": {"name": name}}


# ---------------------------------------------------------------------------------------------- reading
def has_geotiff_tags(path) -> bool:
    """Whether the file is a TIFF whose first image carries GeoTIFF tags (tifffile; rasterio not needed)."""
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() not in TIFF_SUFFIXES:
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            tags = tiff.pages[0].tags
            return any(code in tags for code in GEOTIFF_TAGS)
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as error:
        raise DataError(f"{path}: cannot read the TIFF's tags ({error}); is the file complete?") from error


def require_rasterio(path):
    """The rasterio module, or MissingDependencyError naming the GeoTIFF that needs it."""
    return require_optional("rasterio", extra="geo",
                            needed_for=f"{path} is a GeoTIFF: its map coordinates are read through rasterio")


def read_georeference(path) -> Georeference | None:
    """The georeferencing of an image file, or None when it has none (not a TIFF, no GeoTIFF tags, or tags
    that give no coordinate reference system: then a DataWarning says that pixel coordinates are used).
    A GeoTIFF that rasterio cannot open, or whose geotransform is degenerate, is a DataError naming the file."""
    path = os.fspath(path)
    if not has_geotiff_tags(path):
        return None
    rasterio = require_rasterio(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as dataset:
                crs, transform = dataset.crs, dataset.transform
    except rasterio.errors.RasterioError as error:
        raise DataError(f"{path}: cannot read the GeoTIFF's georeferencing ({error}); is the file complete?") from error
    if crs is None:
        warnings.warn(DataWarning(f"{path}: GeoTIFF tags without a usable coordinate reference system; its "
                                  f"detections are written in pixel coordinates"), stacklevel=2)
        return None
    coefficients = tuple(float(v) for v in tuple(transform)[:6])  # (a, b, c, d, e, f)
    a, b, _, d, e, _ = coefficients
    if not np.isfinite(coefficients).all() or a * e - b * d == 0:
        raise DataError(f"{path}: the GeoTIFF's geotransform {coefficients} is degenerate (it does not map pixels "
                        f"onto an area of the map); check its ModelPixelScale / ModelTransformation tags")
    return Georeference(coefficients, crs.to_wkt(), crs.to_epsg())


def check_inputs(paths) -> None:
    """Before any prediction: a GeoTIFF among `paths` without rasterio installed is a MissingDependencyError.
    Files whose tags cannot be read are left to the image reader, which skips them with a warning."""
    for path in paths:
        try:
            tagged = has_geotiff_tags(path)
        except DataError:
            continue
        if tagged:
            require_rasterio(path)
            return


# ---------------------------------------------------------------------------------------------- geometry
def to_map(points: np.ndarray, transform) -> np.ndarray:
    """(K, 2) pixel-edge x y -> (K, 2) map X Y through the affine (a, b, c, d, e, f)."""
    a, b, c, d, e, f = transform
    x, y = points[:, 0], points[:, 1]
    return np.stack([a * x + b * y + c, d * x + e * y + f], axis=1)


def ring(points: np.ndarray) -> list[list[float]]:
    """(K, 2) points -> a closed GeoJSON ring [[x, y], ..., first point again], wound counterclockwise (positive
    shoelace area in these coordinates)."""
    x, y = points[:, 0], points[:, 1]
    if float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) < 0:
        points = points[::-1]
    return [[float(u), float(v)] for u, v in points] + [[float(points[0, 0]), float(points[0, 1])]]


def feature_collection(detections: Detections, class_names, category_ids: dict[int, int],
                       georeference: Georeference | None = None, *, tolerance: float = TOLERANCE,
                       image: dict | None = None) -> dict:
    """Detections of one image as a GeoJSON FeatureCollection (module docstring): map coordinates through
    `georeference`, pixel coordinates without one. category_ids: {class index: category id}; image: an "image"
    member ({"file_name", "height", "width"}) to say which image the features belong to."""
    collection = {"type": "FeatureCollection"}
    if georeference is not None:
        collection["crs"] = georeference.crs_member()
    if image is not None:
        collection["image"] = image
    features = collection["features"] = []
    for k, outline in enumerate(outlines(detections, tolerance)):
        if not outline.polygons:
            continue
        if georeference is not None:
            pieces = [to_map(polygon, georeference.transform) for polygon in outline.polygons]  # (K, 2) map X Y
        else:
            pieces = outline.polygons  # (K, 2) pixel-edge x y
        rings = [[ring(points)] for points in pieces]  # a polygon a piece: its exterior ring, no holes
        geometry = ({"type": "Polygon", "coordinates": rings[0]} if len(rings) == 1
                    else {"type": "MultiPolygon", "coordinates": rings})
        label = int(detections.labels[k])
        features.append({"type": "Feature", "id": len(features) + 1, "geometry": geometry,
                         "properties": {"class_name": class_names[label], "category_id": category_ids[label],
                                        "score": round(float(detections.scores[k]), 4)}})
    return collection


# ---------------------------------------------------------------------------------------------- writer
class GeoJsonWriter:
    """NAME.geojson per image (module docstring); the images stay where they are."""

    def __init__(self, folder: Path, predictor, tolerance: float):
        self.folder, self.tolerance = folder, tolerance
        self.class_names = list(predictor.class_names)
        self.category_ids = categories.id_of_label(predictor)

    def add(self, path: Path, picture: str, size: tuple[int, int], detections: Detections) -> None:
        image = {"file_name": str(path), "height": int(size[0]), "width": int(size[1])}
        collection = feature_collection(detections, self.class_names, self.category_ids, read_georeference(path),
                                        tolerance=self.tolerance, image=image)
        (self.folder / f"{picture}.geojson").write_text(json.dumps(collection), encoding="utf-8")

    def close(self) -> Path:
        return self.folder

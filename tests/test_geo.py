"""GeoTIFF georeferencing and `maskrcnn predict --format geojson` (geo.py): polygons in the image's map
coordinates, checked against coordinates worked out by hand for a GeoTIFF in EPSG:32633 (UTM zone 33N) with
0.5 m pixels whose top-left corner is at (500000, 5000000): pixel-edge (x, y) lies at
(500000 + 0.5 x, 5000000 - 0.5 y)."""
import json
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from label_oracle import IDS, NAMES, label_picture, oracle_predict, save_tiny_model
from maskrcnn import MaskRCNN
from maskrcnn.cli import main
from maskrcnn.errors import DataError, DataWarning, MissingDependencyError
from maskrcnn.geo import Georeference, read_georeference, ring, to_map
from maskrcnn.large_images import RasterioSource, TiffSource, open_image
from maskrcnn.polygons import mask_polygons

pytest.importorskip("skimage")
rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine  # noqa: E402

HEIGHT, WIDTH = 40, 64
ORIGIN_X, ORIGIN_Y, PIXEL = 500000.0, 5000000.0, 0.5


def rectangle(x1, y1, x2, y2):
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


SMALL = rectangle(3, 2, 9, 6)  # pixels x 3..8, y 2..5: edges x 3..9, y 2..6
LARGE = rectangle(20, 10, 50, 30)  # crosses the tiles' edges at 32 with --tile 32
OBJECTS = [(1, SMALL), (2, LARGE)]


def write_geotiff(path, picture, **options):
    """picture (H, W, 3) uint8 as a 3-band GeoTIFF in EPSG:32633, 0.5 m pixels, corner at (500000, 5000000)."""
    with rasterio.open(path, "w", driver="GTiff", height=picture.shape[0], width=picture.shape[1], count=3,
                       dtype="uint8", crs="EPSG:32633", transform=Affine(PIXEL, 0.0, ORIGIN_X, 0.0, -PIXEL, ORIGIN_Y),
                       **options) as dataset:
        dataset.write(picture.transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)


def tiff_with_tags(path, tags):
    """A plain 3-band picture written by tifffile with the given GeoTIFF tags (code, type, count, value)."""
    tifffile.imwrite(path, np.zeros((HEIGHT, WIDTH, 3), np.uint8), extratags=[(*tag, True) for tag in tags])


UTM33_KEYS = (34735, "H", 8, (1, 1, 0, 1, 3072, 0, 1, 32633))  # GeoKeyDirectory: ProjectedCSTypeGeoKey = 32633


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("geo_model") / "model.pt"
    save_tiny_model(path)
    return path


def run_predict(model_file, image, out, *extra):
    """`maskrcnn predict IMAGE --format geojson` with the oracle standing in for the model; the collection."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MaskRCNN, "predict", oracle_predict)
        code = main(["predict", "--weights", str(model_file), str(image), "--out", str(out), "--format", "geojson",
                     "--no-progress", "--workers", "0", *extra])
    assert code == 0
    return json.loads((out / "geojson" / f"{image.stem}.geojson").read_text())


def vertices(feature) -> set:
    (exterior,) = feature["geometry"]["coordinates"]
    assert exterior[0] == exterior[-1]  # closed
    points = np.array(exterior)
    area = 0.5 * np.sum(points[:-1, 0] * points[1:, 1] - points[1:, 0] * points[:-1, 1])
    assert area > 0  # counterclockwise
    return {tuple(v) for v in exterior[:-1]}


# ---------------------------------------------------------------------------------------------- reading
def test_the_georeference_of_a_geotiff(tmp_path):
    write_geotiff(tmp_path / "g.tif", np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    georeference = read_georeference(tmp_path / "g.tif")
    assert georeference.transform == (0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0)
    assert georeference.epsg == 32633 and "UTM zone 33N" in georeference.crs_wkt
    assert georeference.crs_member() == {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
    source = open_image(tmp_path / "g.tif")
    assert isinstance(source, TiffSource) and source.georeference == georeference


def test_a_compressed_geotiff_is_read_a_window_at_a_time_through_rasterio(tmp_path):
    picture = np.random.default_rng(0).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    write_geotiff(tmp_path / "z.tif", picture, compress="deflate", tiled=True, blockxsize=16, blockysize=16)
    source = open_image(tmp_path / "z.tif")
    assert isinstance(source, RasterioSource) and (source.height, source.width) == (HEIGHT, WIDTH)
    assert np.array_equal(source.read(5, 7, 33, 50), picture[5:33, 7:50])
    assert source.georeference.epsg == 32633


def test_plain_images_have_no_georeference(tmp_path):
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 5, 3), np.uint8))
    assert read_georeference(tmp_path / "a.png") is None and read_georeference(tmp_path / "a.tif") is None


# ---------------------------------------------------------------------------------------------- geometry
def test_to_map_applies_the_whole_affine():
    # X = 0.5 x + 0.25 y + 100, Y = 0.25 x - 0.5 y + 200 (a rotated, sheared grid)
    points = np.array([[0.0, 0.0], [2.0, 4.0], [10.0, 0.0]])
    assert to_map(points, (0.5, 0.25, 100.0, 0.25, -0.5, 200.0)).tolist() == [[100.0, 200.0], [102.0, 198.5],
                                                                                [105.0, 202.5]]


def test_rings_are_closed_and_counterclockwise():
    clockwise = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    assert ring(clockwise) == [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
    assert ring(clockwise[::-1]) == [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]


# ---------------------------------------------------------------------------------------------- predict
def test_geojson_of_a_geotiff_holds_the_hand_computed_map_coordinates(tmp_path, model_file):
    write_geotiff(tmp_path / "scene.tif", label_picture([(1, SMALL)], HEIGHT, WIDTH))
    collection = run_predict(model_file, tmp_path / "scene.tif", tmp_path / "out")
    assert collection["type"] == "FeatureCollection"
    assert collection["crs"] == {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
    (feature,) = collection["features"]
    assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
    assert feature["properties"] == {"class_name": "cat", "category_id": 3, "score": 0.89}
    # The mask's pixel-edge outline, simplified within 1 px: (8.5, 6), (3.5, 6), (3, 2.5), (8.5, 2) (corners cut
    # by the half-pixel steps of the traced boundary); on the map X = 500000 + 0.5 x, Y = 5000000 - 0.5 y.
    assert [polygon.tolist() for polygon in mask_polygons(SMALL)] == [[[8.5, 6.0], [3.5, 6.0], [3.0, 2.5], [8.5, 2.0]]]
    assert vertices(feature) == {(500004.25, 4999997.0), (500001.75, 4999997.0), (500001.5, 4999998.75),
                                 (500004.25, 4999999.0)}


def test_tiled_geojson_of_a_compressed_geotiff(tmp_path, model_file):
    """--tile 32 --overlap 8 over a deflate-compressed, tiled GeoTIFF (read through rasterio a window at a time):
    the large rectangle, cut by every tile, is joined from their pieces. Each map vertex is the hand formula applied to the pixel vertex
    written for the same picture as a PNG, and lies on the object's box: x 20..50 -> 500010..500025 m,
    y 10..30 -> 4999995..4999985 m (within half a pixel, where the traced outline cuts a corner)."""
    picture = label_picture(OBJECTS, HEIGHT, WIDTH)
    write_geotiff(tmp_path / "scene.tif", picture, compress="deflate", tiled=True, blockxsize=16, blockysize=16)
    Image.fromarray(picture).save(tmp_path / "scene.png")
    tiling = ("--tile", "32", "--overlap", "8")
    on_map = run_predict(model_file, tmp_path / "scene.tif", tmp_path / "map", *tiling)
    in_pixels = run_predict(model_file, tmp_path / "scene.png", tmp_path / "pixels", *tiling)
    assert on_map["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert [f["properties"]["class_name"] for f in on_map["features"]] == ["cat", "dog"]
    for map_feature, pixel_feature in zip(on_map["features"], in_pixels["features"]):
        assert vertices(map_feature) == {(ORIGIN_X + PIXEL * x, ORIGIN_Y - PIXEL * y) for x, y in vertices(pixel_feature)}
    xs, ys = np.array(sorted(vertices(on_map["features"][1]))).T
    assert 500010.0 <= xs.min() <= 500010.25 and 500024.75 <= xs.max() <= 500025.0
    assert 4999985.0 <= ys.min() <= 4999985.25 and 4999994.75 <= ys.max() <= 4999995.0


def test_a_png_gives_pixel_coordinates_and_no_crs(tmp_path, model_file):
    Image.fromarray(label_picture([(2, SMALL)], HEIGHT, WIDTH)).save(tmp_path / "photo.png")
    collection = run_predict(model_file, tmp_path / "photo.png", tmp_path / "out")
    assert "crs" not in collection
    assert collection["image"] == {"file_name": str(tmp_path / "photo.png"), "height": HEIGHT, "width": WIDTH}
    (feature,) = collection["features"]
    assert feature["properties"] == {"class_name": "dog", "category_id": 7, "score": 0.89}
    assert vertices(feature) == {(8.5, 6.0), (3.5, 6.0), (3.0, 2.5), (8.5, 2.0)}


def test_an_object_in_two_pieces_is_a_multipolygon(tmp_path, model_file):
    Image.fromarray(label_picture([(3, SMALL | LARGE)], HEIGHT, WIDTH)).save(tmp_path / "two.png")
    (feature,) = run_predict(model_file, tmp_path / "two.png", tmp_path / "out")["features"]
    assert feature["geometry"]["type"] == "MultiPolygon" and len(feature["geometry"]["coordinates"]) == 2
    assert feature["properties"]["class_name"] == NAMES[2] and feature["properties"]["category_id"] == IDS[2]


# ---------------------------------------------------------------------------------------------- errors
def test_a_geotiff_without_rasterio_is_a_clear_error_before_predicting(tmp_path, monkeypatch, capsys, model_file):
    write_geotiff(tmp_path / "scene.tif", np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    monkeypatch.setitem(sys.modules, "rasterio", None)  # import rasterio now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"scene\.tif is a GeoTIFF.*maskrcnn\[geo\]"):
        read_georeference(tmp_path / "scene.tif")
    code = main(["predict", "--weights", str(model_file), str(tmp_path / "scene.tif"), "--out", str(tmp_path / "out"),
                 "--format", "geojson", "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2 and "scene.tif" in error and "maskrcnn[geo]" in error
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_degenerate_geotransform_is_an_error_naming_the_file(tmp_path, capsys, model_file):
    # A ModelTransformation of zeros: GDAL reads a CRS but a transform that puts every pixel on one point.
    tiff_with_tags(tmp_path / "flat.tif", [(34264, "d", 16, (0.0,) * 15 + (1.0,)), UTM33_KEYS])
    with pytest.raises(DataError, match=r"flat\.tif: .*degenerate"):
        read_georeference(tmp_path / "flat.tif")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MaskRCNN, "predict", oracle_predict)
        code = main(["predict", "--weights", str(model_file), str(tmp_path / "flat.tif"), "--out",
                     str(tmp_path / "out"), "--format", "geojson", "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2 and "flat.tif" in error and "degenerate" in error


def test_a_damaged_tiff_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match=r"broken\.tif"):
        read_georeference(tmp_path / "broken.tif")


def test_geotiff_tags_without_a_crs_warn_and_give_pixel_coordinates(tmp_path):
    tiff_with_tags(tmp_path / "local.tif", [(33550, "d", 3, (0.5, 0.5, 0.0)), (33922, "d", 6, (0, 0, 0, 1, 2, 0))])
    with pytest.warns(DataWarning, match=r"local\.tif: .*pixel coordinates"):
        assert read_georeference(tmp_path / "local.tif") is None


def test_a_crs_without_an_epsg_code_is_named_by_its_wkt():
    wkt = 'LOCAL_CS["site grid",UNIT["metre",1]]'
    assert Georeference((1.0, 0.0, 0.0, 0.0, -1.0, 0.0), wkt, None).crs_member()["properties"]["name"] == wkt


def test_predict_help_lists_geojson(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "geojson" in capsys.readouterr().out

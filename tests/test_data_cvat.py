"""CvatDataset: polygons, boxes, CVAT mask RLE, labels from <meta>, occluded, z_order, broken files."""
import numpy as np
import pytest
from PIL import Image

from maskrcnn.data import CvatDataset, load_dataset_spec
from maskrcnn.errors import DataError, DataWarning

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

H, W = 40, 50
META = """<meta><task><labels>
  <label><name>cat</name><attributes/></label><label><name>dog</name></label><label><name>unused</name></label>
</labels></task></meta>"""


def _write(folder, images_xml, names=("a.png",)):
    for name in names:
        Image.new("RGB", (W, H)).save(folder / name)
    path = folder / "annotations.xml"
    path.write_text(f"<?xml version='1.0' encoding='utf-8'?>\n<annotations><version>1.1</version>{META}"
                    f"{images_xml}</annotations>")
    return path


def _cvat_rle(part: np.ndarray) -> str:
    """Row-major run lengths starting with background, written out by hand."""
    counts, current, run = [], False, 0
    for value in part.flatten():
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return ", ".join(map(str, counts))


def test_every_shape_type_and_labels_from_meta(tmp_path):
    part = np.zeros((3, 4), dtype=bool)
    part[0, 1:3] = part[2, 3] = True
    path = _write(tmp_path, f"""<image id="7" name="a.png" width="{W}" height="{H}">
      <polygon label="cat" occluded="1" source="manual" points="10.0,5.0;30.0,5.0;30.0,15.0;10.0,15.0" z_order="0">
        <attribute name="color">black</attribute></polygon>
      <box label="dog" occluded="0" xtl="0" ytl="20" xbr="5" ybr="24" z_order="0"/>
      <mask label="dog" occluded="0" rle="{_cvat_rle(part)}" left="40" top="30" width="4" height="3" z_order="0"/>
      <polyline label="cat" points="1,1;5,5" z_order="0"/>
      <points label="cat" points="1,1" z_order="0"/>
    </image>""")
    with pytest.warns(DataWarning, match="<polyline> is not an area shape"):
        dataset = CvatDataset(path)
    assert dataset.class_names == ["BG", "cat", "dog", "unused"]
    assert [c["id"] for c in dataset.class_info[1:]] == [1, 2, 3]
    masks, class_ids = dataset.load_mask(0)
    assert dataset.image_info[0]["id"] == 7 and class_ids.tolist() == [1, 2, 2]
    assert masks[0].sum() == 200 and masks[0][5:15, 10:30].all()
    assert masks[1].sum() == 20 and masks[1][20:24, 0:5].all()
    expected = np.zeros((H, W), dtype=bool)
    expected[30:33, 40:44] = part
    assert np.array_equal(masks[2], expected)
    instances = dataset.image_info[0]["instances"]
    assert instances[0].attributes == {"occluded": True, "color": "black"}
    assert instances[1].attributes["occluded"] is False


def test_z_order_takes_hidden_pixels_from_the_lower_shape(tmp_path):
    path = _write(tmp_path, f"""<image id="0" name="a.png" width="{W}" height="{H}">
      <box label="cat" xtl="20" ytl="0" xbr="40" ybr="10" z_order="2"/>
      <box label="dog" xtl="0" ytl="0" xbr="30" ybr="10" z_order="1"/>
      <box label="dog" xtl="0" ytl="20" xbr="10" ybr="30" z_order="1"/>
    </image>""")
    masks, _ = CvatDataset(path).load_mask(0)
    assert masks[0].sum() == 200  # on top: whole
    assert masks[1].sum() == 200 and not masks[1][:, 30:].any() and not (masks[0] & masks[1]).any()
    assert masks[2].sum() == 100  # overlaps nothing: untouched


def test_fully_hidden_and_empty_shapes_are_dropped(tmp_path):
    path = _write(tmp_path, f"""<image id="0" name="a.png" width="{W}" height="{H}">
      <box label="cat" xtl="0" ytl="0" xbr="50" ybr="40" z_order="1"/>
      <box label="dog" xtl="5" ytl="5" xbr="10" ybr="10" z_order="0"/>
      <polygon label="dog" points="60,5;70,5;70,15" z_order="0"/>
    </image>""")
    with pytest.warns(DataWarning, match="annotation 'box 1': its mask has no pixel"):
        dataset = CvatDataset(path, max_skip_fraction=1.0)
    assert dataset.num_instances(0) == 1
    assert [p.annotation_id for p in dataset.load_problems] == ["box 1", "polygon 2"]


def test_broken_file_lists_every_fatal_problem(tmp_path):
    path = _write(tmp_path, f"""<image id="0" name="a.png" width="{W}">
        <box label="cat" xtl="0" ytl="0" xbr="5" ybr="5"/></image>
      <image id="1" name="/etc/passwd" width="{W}" height="{H}"/>
      <image id="2" name="a.png" width="{W}" height="{H}">
        <box label="horse" xtl="0" ytl="0" xbr="5" ybr="5"/>
        <box label="cat" xtl="3" ytl="0" xbr="3" ybr="5"/>
        <polygon label="cat" points="1,1;5,5"/>
        <mask label="cat" rle="1, 2" left="0" top="0" width="4" height="3"/>
        <box label="cat" xtl="0" ytl="0" xbr="9" ybr="9"/>
      </image>""")
    with pytest.raises(DataError) as error:
        CvatDataset(path)
    text = str(error.value)
    assert "3 problem(s)" in text
    assert "image 0: <image name='a.png'> needs whole-number width and height" in text
    assert "image 1: " in text and "absolute path" in text
    assert "image 2, annotation 'box 0': label 'horse' is not among the labels" in text
    dataset = CvatDataset(path, collect_errors=True, max_skip_fraction=1.0)
    messages = [str(p) for p in dataset.load_problems]
    assert sum(p.fatal for p in dataset.load_problems) == 3
    assert any("'box 1': box [3.0, 0.0, 3.0, 5.0] has zero" in m for m in messages)
    assert any("'polygon 2': polygon needs at least 3" in m for m in messages)
    assert any("'mask 3': mask rle counts sum to 3, not width*height = 4*3 = 12" in m for m in messages)
    assert dataset.num_instances(0) == 1


def test_spec_and_not_xml(tmp_path):
    path = _write(tmp_path, f"""<image id="0" name="a.png" width="{W}" height="{H}">
      <box label="cat" xtl="0" ytl="0" xbr="5" ybr="5"/></image>""")
    assert len(load_dataset_spec(f"cvat:{path}:{tmp_path}")) == 1
    (tmp_path / "bad.xml").write_text("<annotations><image")
    with pytest.raises(DataError, match="bad.xml: not valid XML"):
        CvatDataset(tmp_path / "bad.xml")

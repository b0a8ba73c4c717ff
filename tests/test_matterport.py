"""matterport's .h5 weights and matterport's own detections (interop.matterport and the matterport subpackage).

The reference case in ../shared/matterport/ was made by running matterport's original Keras code in
float64 on seeded weights (rebuilt here by its make_h5.py, ~180 MB in a temporary folder). The default
suite checks the loader, its refusals, and the matterport-specific steps one by one against the case's
intermediate outputs and against hand-worked values; the full three-image parity runs with `-m slow`.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import roi_align

from maskrcnn.config import Config
from maskrcnn.errors import CheckpointError
from maskrcnn.interop import from_matterport
from maskrcnn.mask_head import select_class
from maskrcnn.matterport.crop_and_resize import assign_levels, crop_and_resize
from maskrcnn.matterport.normalized import to_normalized
from maskrcnn.matterport.resize import MatterportPreprocessor, resize_like_skimage

SHARED = Path(__file__).resolve().parents[2] / "shared" / "matterport"
CASE = SHARED / "case_r50_512_s11"
MEAN_PIXEL = np.array([123.7, 116.8, 103.9])

pytestmark = pytest.mark.skipif(not (CASE / "reference.npz").exists(), reason="matterport reference case not found")


def case_config(**overrides) -> Config:
    """The case's config.json: ResNet-50, 81 classes, square 512, min confidence 0.7."""
    return Config.matterport(num_classes=81, backbone="resnet50", image_min_dim=512, image_max_dim=512,
                             detection_min_confidence=0.7, **overrides)


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(CASE / "reference.npz"))


@pytest.fixture(scope="module")
def images(reference):
    return [np.array(Image.open(CASE / "images" / str(name)).convert("RGB")) for name in reference["image_names"]]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The case's weights, rebuilt from its seed by matterport's make_h5.py (about 2 s, 180 MB)."""
    out = tmp_path_factory.mktemp("matterport") / "case_r50_s11.h5"
    subprocess.run(
        [sys.executable, str(SHARED / "make_h5.py"), "--backbone", "resnet50", "--seed", "11",
         "--heads", str(CASE / "heads.npz"), "--out", str(out)],
        check=True,
    )
    return out


def keras_tensor(path: Path, layer: str, weight: str) -> torch.Tensor:
    with h5py.File(path, "r") as f:
        return torch.from_numpy(f[layer][f"{weight}:0"][()])


def edited_copy(source: Path, target: Path, edit) -> Path:
    shutil.copyfile(source, target)
    with h5py.File(target, "r+") as f:
        edit(f)
    return target


# ---------------------------------------------------------------------------------------------- preprocessing
def test_preprocessing_gives_matterports_molded_images(reference, images):
    """skimage resize + uint8 truncation + black square padding, then the mean pixel: bit for bit."""
    c = case_config()
    pre = MatterportPreprocessor(resize_mode=c.image_resize_mode, min_dim=c.image_min_dim, max_dim=c.image_max_dim,
                                 size_divisor=c.image_size_divisor, pixel_mean=c.pixel_mean, pixel_std=c.pixel_std)
    for k, image in enumerate(images):
        tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).double() / 255.0
        batch = pre([tensor])
        molded = reference[f"{k}_resized_image"].astype(np.float64) - MEAN_PIXEL  # (512, 512, 3)
        assert batch.windows[0] == tuple(int(v) for v in reference[f"{k}_window"])
        assert np.array_equal(batch.tensor[0].permute(1, 2, 0).numpy(), molded)


def test_resize_equals_scikit_image_bit_for_bit():
    """Masks (float, any box size, up and down) and uint8 images, including flat areas that truncate."""
    skimage_transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(0)
    for trial in range(30):
        mask = rng.random((28, 28)) * 0.6 + (0.3 if trial % 2 else 0.0)  # some without 0 in their range
        size = tuple(int(v) for v in rng.integers(1, 120, 2))
        expected = skimage_transform.resize(mask, size, order=1, mode="constant", cval=0, clip=True,
                                            preserve_range=False, anti_aliasing=False)
        assert np.array_equal(resize_like_skimage(torch.from_numpy(mask), size).numpy(), expected)
    for trial in range(10):
        image = (rng.integers(0, 3, (int(rng.integers(4, 50)), int(rng.integers(4, 50)), 3)) * 100 + 20).astype(np.uint8)
        size = tuple(int(v) for v in rng.integers(3, 80, 2))
        expected = skimage_transform.resize(image, size, order=1, mode="constant", cval=0, clip=True,
                                            preserve_range=True, anti_aliasing=False)
        ours = resize_like_skimage(torch.from_numpy(image).permute(2, 0, 1), size).permute(1, 2, 0).numpy()
        assert np.array_equal(ours, expected)
        assert np.array_equal(ours.astype(np.uint8), expected.astype(np.uint8))


def test_resize_border_fades_to_zero_and_clips():
    """Upsampling [[4, 8]] to width 4: samples at -0.25, 0.25, 0.75, 1.25; outside neighbours count as 0,
    then the clip to the input's range [4, 8] lifts the faded border values back to 4 and 6 stays."""
    out = resize_like_skimage(torch.tensor([[4.0, 8.0]]), (1, 4))
    # raw: 0.75*4 = 3, 0.75*4 + 0.25*8 = 5, 0.25*4 + 0.75*8 = 7, 0.75*8 = 6 -> clipped to [4, 8]
    assert out.tolist() == [[4.0, 5.0, 7.0, 6.0]]


# ---------------------------------------------------------------------------------------------- crop_and_resize
def test_crop_and_resize_hand_values():
    feature = torch.arange(25, dtype=torch.float64).view(1, 1, 5, 5)  # value = 5 * y + x
    index = torch.zeros(1, dtype=torch.int64)
    # The whole map in 3 samples: both edges included, coordinates 0, 2, 4.
    whole = crop_and_resize(feature, torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64), index, 3)
    assert whole[0, 0].tolist() == [[0, 2, 4], [10, 12, 14], [20, 22, 24]]
    # y from 0.1 to 0.6 on 4 cells: samples at 0.4, 1.4, 2.4 (bilinear), x at 0, 2, 4.
    part = crop_and_resize(feature, torch.tensor([[0.1, 0.0, 0.6, 1.0]], dtype=torch.float64), index, 3)
    assert torch.allclose(part[0, 0], torch.tensor([[2.0, 4, 6], [7, 9, 11], [12, 14, 16]], dtype=torch.float64))
    # A box past the border: samples beyond 4 are 0 (TensorFlow's extrapolation value), not the edge.
    past = crop_and_resize(feature, torch.tensor([[0.0, 0.5, 1.0, 1.5]], dtype=torch.float64), index, 3)
    assert past[0, 0].tolist() == [[2, 4, 0], [12, 14, 0], [22, 24, 0]]
    # One sample: the box centre.
    centre = crop_and_resize(feature, torch.tensor([[0.25, 0.25, 0.75, 0.75]], dtype=torch.float64), index, 1)
    assert centre.item() == 12.0


def roi_align_box(box_n: torch.Tensor, height: int, width: int, size: int) -> torch.Tensor:
    """A crop_and_resize box as the roi_align box whose bin centres fall on the same sample points."""
    y1, x1, y2, x2 = box_n
    step_y = (y2 - y1) * (height - 1) / (size - 1)
    step_x = (x2 - x1) * (width - 1) / (size - 1)
    top, left = y1 * (height - 1) - 0.5 * step_y, x1 * (width - 1) - 0.5 * step_x
    return torch.stack((torch.zeros(()), left, top, left + size * step_x, top + size * step_y)).double()


def test_roi_align_matches_crop_and_resize_only_inside_and_not_tiny():
    """Why crop_and_resize is our own code: torchvision's roi_align (sampling_ratio=1, aligned=False) on a
    shifted box reproduces it for boxes well inside the map, but clamps samples within one cell past the
    border to the edge value (TensorFlow gives 0) and enlarges boxes smaller than one cell."""
    generator = torch.Generator().manual_seed(0)
    feature = torch.randn(1, 4, 16, 16, generator=generator, dtype=torch.float64)
    index = torch.zeros(1, dtype=torch.int64)
    inside = torch.tensor([0.21, 0.13, 0.77, 0.64], dtype=torch.float64)
    ours = crop_and_resize(feature, inside[None], index, 7)
    theirs = roi_align(feature, roi_align_box(inside, 16, 16, 7)[None], 7, spatial_scale=1.0, sampling_ratio=1, aligned=False)
    assert (ours - theirs).abs().max().item() < 1e-12
    past_border = torch.tensor([0.2, 0.5, 0.7, 1.03], dtype=torch.float64)  # last x sample at 15.45
    ours = crop_and_resize(feature, past_border[None], index, 7)
    theirs = roi_align(feature, roi_align_box(past_border, 16, 16, 7)[None], 7, spatial_scale=1.0, sampling_ratio=1, aligned=False)
    assert ours[..., -1].abs().max().item() == 0.0 and theirs[..., -1].abs().max().item() > 0.1
    assert (ours[..., :-1] - theirs[..., :-1]).abs().max().item() < 1e-12
    tiny = torch.tensor([0.4, 0.4, 0.41, 0.41], dtype=torch.float64)  # 0.15 cells
    ours = crop_and_resize(feature, tiny[None], index, 7)
    theirs = roi_align(feature, roi_align_box(tiny, 16, 16, 7)[None], 7, spatial_scale=1.0, sampling_ratio=1, aligned=False)
    assert (ours - theirs).abs().max().item() > 1e-3


def test_levels_round_normalised_sizes_half_to_even():
    side = lambda px: px / 512  # noqa: E731 - normalised side of a square box in a 512 image
    sizes = torch.tensor([side(224), side(112), side(448), side(8), 1.0, side(224 * 2 ** 0.6), side(224 * 2 ** 0.4)], dtype=torch.float64)
    boxes = torch.stack((torch.zeros_like(sizes), torch.zeros_like(sizes), sizes, sizes), dim=1)
    # 224 px -> 4; 112 -> 3; 448 -> 5; tiny -> 2; whole image (log2 1.19) -> 5; 2^0.6 rounds up (floor would
    # give 4); 2^0.4 rounds down
    assert assign_levels(boxes, (512, 512)).tolist() == [4, 3, 5, 2, 5, 5, 4]


# ---------------------------------------------------------------------------------------------- loading
def test_loader_maps_every_layer_explicitly(weights):
    model = from_matterport(weights)
    assert model.config.backbone == "resnet50" and model.config.num_classes == 81
    assert model.config.layout == "matterport"
    # conv (kh, kw, in, out) -> (out, in, kh, kw)
    assert torch.equal(model.backbone.trunk.conv1.weight, keras_tensor(weights, "conv1", "conv1/kernel").permute(3, 2, 0, 1))
    assert torch.equal(model.box_head.shared[0].weight, keras_tensor(weights, "mrcnn_class_conv1", "mrcnn_class_conv1/kernel").permute(3, 2, 0, 1))
    assert model.box_head.shared[0].weight.shape == (1024, 256, 7, 7) and model.box_head.shared[3].weight.shape == (1024, 1024, 1, 1)
    # transposed conv (kh, kw, out, in) -> (in, out, kh, kw)
    assert torch.equal(model.mask_head.upsample.weight, keras_tensor(weights, "mrcnn_mask_deconv", "mrcnn_mask_deconv/kernel").permute(3, 2, 0, 1))
    # batch norm
    assert torch.equal(model.backbone.trunk.stage4[5].bn_b.running_var, keras_tensor(weights, "bn4f_branch2b", "bn4f_branch2b/moving_variance"))
    assert torch.equal(model.backbone.trunk.stage3[0].shortcut_bn.weight, keras_tensor(weights, "bn3a_branch1", "bn3a_branch1/gamma"))
    # deltas (dy, dx, dh, dw) -> (dx, dy, dw, dh): anchor 2's dx is their channel 2*4+1, class 7's dw their 7*4+3
    with h5py.File(weights, "r") as f:
        rpn_kernel = torch.from_numpy(f["rpn_model"]["rpn_bbox_pred/kernel:0"][()])  # (1, 1, 512, 12)
        rpn_class = torch.from_numpy(f["rpn_model"]["rpn_class_raw/bias:0"][()])  # (6,)
    assert torch.equal(model.rpn.deltas.weight[2 * 4 + 0, :, 0, 0], rpn_kernel[0, 0, :, 2 * 4 + 1])
    assert torch.equal(model.rpn.objectness.bias, rpn_class)  # (anchor, [bg, fg]) is already our layout
    fc = keras_tensor(weights, "mrcnn_bbox_fc", "mrcnn_bbox_fc/kernel")  # (1024, 324)
    assert torch.equal(model.box_head.deltas.weight[7 * 4 + 2], fc[:, 7 * 4 + 3])
    assert torch.equal(model.box_head.class_logits.weight, keras_tensor(weights, "mrcnn_class_logits", "mrcnn_class_logits/kernel").t())
    # the mask convs' biases are folded into the following batch norm's mean (our convs there have none)
    folded = keras_tensor(weights, "mrcnn_mask_bn2", "mrcnn_mask_bn2/moving_mean").double() - keras_tensor(weights, "mrcnn_mask_conv2", "mrcnn_mask_conv2/bias").double()
    assert torch.allclose(model.mask_head.convs[4].running_mean.double(), folded, rtol=0, atol=1e-7)
    with pytest.raises(CheckpointError, match="81 classes"):
        from_matterport(weights, num_classes=5)


def test_variable_length_names_load_the_same(weights, tmp_path):
    """Files written by newer Keras store the names as variable-length strings."""

    def to_vlen(f):
        text = h5py.string_dtype()
        f.attrs["layer_names"] = np.array([n.decode() for n in f.attrs["layer_names"]], dtype=text)
        for name in f.attrs["layer_names"]:
            group = f[name]
            group.attrs["weight_names"] = np.array([n.decode() for n in group.attrs["weight_names"]], dtype=text)

    path = edited_copy(weights, tmp_path / "vlen.h5", to_vlen)
    with h5py.File(path, "r") as f:
        assert f.attrs["layer_names"].dtype == object
    model = from_matterport(path)
    assert torch.equal(model.rpn.conv[0].weight, keras_tensor(weights, "rpn_model", "rpn_conv_shared/kernel").permute(3, 2, 0, 1))


def test_refuses_a_truncated_file(weights, tmp_path):
    path = tmp_path / "truncated.h5"
    path.write_bytes(weights.read_bytes()[: 5_000_000])
    with pytest.raises(CheckpointError, match="truncated.h5"):
        from_matterport(path)


def test_refuses_a_file_with_a_layer_missing(weights, tmp_path):
    def drop(f):
        del f["mrcnn_mask_deconv"]
        f.attrs["layer_names"] = np.array([n for n in f.attrs["layer_names"] if n != b"mrcnn_mask_deconv"])

    path = edited_copy(weights, tmp_path / "missing.h5", drop)
    with pytest.raises(CheckpointError, match=r"missing.h5.*missing mrcnn_mask_deconv/bias, mrcnn_mask_deconv/kernel.*nothing was loaded"):
        from_matterport(path)


def test_refuses_a_file_with_a_wrong_shape_or_an_extra_layer(weights, tmp_path):
    def narrow(f):
        del f["fpn_p3"]["fpn_p3/kernel:0"]
        f["fpn_p3"].create_dataset("fpn_p3/kernel:0", data=np.zeros((3, 3, 256, 128), np.float32))

    path = edited_copy(weights, tmp_path / "misshapen.h5", narrow)
    with pytest.raises(CheckpointError, match=r"misshapen.h5.*wrong shape fpn_p3 \(3, 3, 256, 128\) \(expected \(3, 3, 256, 256\)\)"):
        from_matterport(path)

    def add(f):
        group = f.create_group("mystery_conv")
        group.attrs["weight_names"] = np.array([b"mystery_conv/kernel:0"])
        group.create_dataset("mystery_conv/kernel:0", data=np.zeros((1, 1, 2, 2), np.float32))
        f.attrs["layer_names"] = np.append(f.attrs["layer_names"], np.array([b"mystery_conv"]))

    path = edited_copy(weights, tmp_path / "extra.h5", add)
    with pytest.raises(CheckpointError, match=r"extra.h5.*extra \(not part of this model\) mystery_conv"):
        from_matterport(path)


def test_refuses_files_that_are_not_matterport_weights(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not an HDF5 file")
    with pytest.raises(CheckpointError, match="notes.h5"):
        from_matterport(text)
    other = tmp_path / "classifier.h5"
    with h5py.File(other, "w") as f:  # a Keras weights file of some other network
        f.attrs["layer_names"] = np.array([b"dense_1"])
        group = f.create_group("dense_1")
        group.attrs["weight_names"] = np.array([b"dense_1/kernel:0", b"dense_1/bias:0"])
        group.create_dataset("dense_1/kernel:0", data=np.zeros((4, 2), np.float32))
        group.create_dataset("dense_1/bias:0", data=np.zeros((2,), np.float32))
    with pytest.raises(CheckpointError, match=r"classifier.h5.*not a matterport Mask R-CNN.*conv1, mrcnn_class_logits"):
        from_matterport(other)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"plain.h5.*no 'layer_names'"):
        from_matterport(plain)


# ---------------------------------------------------------------------------------------------- parity (slow)
def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


@pytest.mark.slow
def test_same_detections_as_matterport_in_float64(weights, reference, images):
    """Each step against matterport's intermediate outputs, then the final detections (~2 min on 2 cores)."""
    model = from_matterport(weights, config=case_config()).double()
    for k, image in enumerate(images):
        with torch.no_grad():  # the steps of MaskRCNN.find_instances, to compare where matterport saved outputs
            batch = model.preprocessor(model.prepare_images([image]))
            pyramid = model.backbone(batch.tensor)
            rpn_out = model.rpn(pyramid)
            foreground = torch.softmax(rpn_out.objectness, -1)[0, :, 1].numpy()
            assert np.abs(foreground - reference[f"{k}_rpn_fg_prob"]).max() < 1e-12
            proposals = model.propose_inference(rpn_out, model.anchors_for(pyramid, batch.padded_size), batch.windows, image_size=batch.padded_size)
            assert np.abs(to_normalized(proposals[0], batch.padded_size).numpy() - reference[f"{k}_rpn_rois"]).max() < 1e-12
            logits, deltas = model.box_head(model.box_roi_align(pyramid[:4], proposals))
            probabilities = torch.softmax(logits, -1).numpy()
            # A box ending on the border puts its last sample at Hf - 1 or one ulp past it (then zeroed, as in
            # TensorFlow): a few ROIs of 1000 flip with ulp-level box differences; detections do not
            agreeing = np.abs(probabilities - reference[f"{k}_mrcnn_class"]).max(1) < 1e-10
            assert agreeing.mean() >= 0.99
            found = model.detection_layer(logits, deltas, proposals[0], batch.windows[0])
            expected = reference[f"{k}_detections"]
            assert len(found.boxes) == len(expected)
            assert np.abs(to_normalized(found.boxes, batch.padded_size).numpy() - expected[:, :4]).max() < 1e-12
            assert np.array_equal(found.labels.numpy(), expected[:, 4].astype(np.int64))
            assert np.abs(found.scores.numpy() - expected[:, 5]).max() < 1e-12
            mask_probs = torch.sigmoid(select_class(model.mask_head(model.mask_roi_align(pyramid[:4], [found.boxes])), found.labels))
            # 1e-8, not 1e-12: the mask convs' biases are folded into float32 batch-norm means
            assert np.abs(mask_probs.numpy() - reference[f"{k}_mrcnn_mask_det"]).max() < 1e-7

        got = model.predict([image])[0]
        rois = reference[f"{k}_rois"]  # (N, 4) y1 x1 y2 x2
        assert len(got) == len(rois)
        assert np.array_equal(got.labels.numpy(), reference[f"{k}_class_ids"].astype(np.int64))
        assert np.abs(got.boxes.numpy()[:, [1, 0, 3, 2]] - rois).max() <= 0.5
        assert np.abs(got.scores.double().numpy() - reference[f"{k}_scores"]).max() <= 1e-6
        assert got.masks.shape == (len(rois),) + image.shape[:2]
        assert mask_iou(got.masks.numpy(), reference[f"{k}_masks"].transpose(2, 0, 1)).min() >= 0.97


@pytest.mark.slow
def test_float32_path_runs_and_mostly_agrees(weights, reference, images):
    """Float32 is not stable enough for detection-level equality on random weights (README): it must run
    and give valid detections; most of matterport's detections reappear."""
    model = from_matterport(weights, config=case_config())
    found = total = 0
    for k, image in enumerate(images):
        got = model.predict([image])[0]
        assert got.boxes.dtype == torch.float32 and got.masks.shape[1:] == image.shape[:2]
        rois = reference[f"{k}_rois"][:, [1, 0, 3, 2]]
        used = set()
        for j, (box, label, score) in enumerate(zip(rois, reference[f"{k}_class_ids"], reference[f"{k}_scores"])):
            for i in range(len(got)):
                if i not in used and got.labels[i] == label and np.abs(got.boxes[i].numpy() - box).max() <= 0.5 \
                        and abs(got.scores[i].item() - score) <= 1e-3:
                    used.add(i)
                    found += 1
                    break
        total += len(rois)
    assert found >= total // 2


def test_ground_truth_boxes_enter_matterports_frame_for_training():
    """matterport trains on norm_boxes(extract_bboxes(resized mask)): far corner on the box's last pixel.

    A 64 x 128 image, square mode 128..256: scale 2, resized to 128 x 256, padded to 256 x 256 with 64 rows on
    top. The mask's rows 10..19, cols 30..49 (box 30 10 50 20 in our pixels) become rows 84..103, cols 60..99;
    extract_bboxes gives y1 x1 y2 x2 = 84 60 104 100 and norm_boxes (84, 60, 103, 99) / 255.
    """
    from maskrcnn.model import MaskRCNN

    config = Config.matterport(num_classes=2, backbone="resnet50", image_min_dim=128, image_max_dim=256,
                               fpn_channels=16, rpn_conv_channels=16, box_head_channels=16, mask_head_channels=8)
    model = MaskRCNN(config)
    batch = model.preprocessor([torch.rand(3, 64, 128)])
    assert batch.padded_size == (256, 256) and batch.windows[0] == (64, 0, 192, 256)
    gt = torch.tensor([[30.0, 10.0, 50.0, 20.0]])
    in_frame = model.to_batch_frame(gt, batch, 0)
    assert torch.equal(in_frame, torch.tensor([[60.0, 84.0, 99.0, 103.0]]))
    expected = torch.tensor([[84.0, 60.0, 103.0, 99.0]]) / 255
    assert torch.allclose(to_normalized(in_frame, batch.padded_size), expected, atol=1e-7, rtol=0)
    # back to pixels of the padded batch, far corner one past the box: extract_bboxes' box again
    assert torch.equal(model.frame.to_pixels(in_frame), torch.tensor([[60.0, 84.0, 100.0, 104.0]]))

    # The pixel convention (torchvision's) keeps the far corner one past the box
    pixels = MaskRCNN(Config.demo(image_min_dim=128, image_max_dim=256))
    batch = pixels.preprocessor([torch.rand(3, 64, 128)])
    scale_y, scale_x = batch.scales[0]
    top, left = batch.windows[0][:2]
    assert torch.allclose(pixels.to_batch_frame(gt, batch, 0),
                          torch.tensor([[30 * scale_x + left, 10 * scale_y + top, 50 * scale_x + left, 20 * scale_y + top]]))

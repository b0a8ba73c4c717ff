"""matterport's box frame, kept in pixels: `MatterportFrame`, the matterport layout's `frame.PixelFrame`.

matterport holds boxes normalised as (y1, x1, y2 - 1, x2 - 1) / (H - 1, W - 1, H - 1, W - 1) (`norm_boxes`)
and maps them back with round(b * (H - 1, W - 1, H - 1, W - 1) + (0, 0, 1, 1)) (`denorm_boxes`). Inside
our model such a box is b * (H - 1, W - 1): still x1 y1 x2 y2 pixels of the padded image, but with the
far corner on the last pixel inside the box instead of one past it. Anchors, deltas, clipping and NMS
then give matterport's numbers (IoU and the delta coding do not change under a per-axis scale), and
`to_normalized` recovers matterport's normalised boxes wherever its formulas need them.

Shape letters:
    L: anchors; R: boxes; D: detections of one image; M: head mask size; H, W: an image's size
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..frame import PixelFrame
from ..nms import top_k_stable
from ..structures import Detections
from .crop_and_resize import crop_and_resize
from .normalized import to_normalized
from .resize import resize_like_skimage


def pixels_to_frame(boxes: Tensor) -> Tensor:
    """(..., 4) x1 y1 x2 y2 pixel boxes, far corner one past the box (ground truth) -> this convention:
    (x1, y1, x2 - 1, y2 - 1), as matterport's `norm_boxes` treats the boxes it trains on."""
    return boxes - torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=boxes.dtype, device=boxes.device)


def frame_to_pixels(boxes: Tensor) -> Tensor:
    """(..., 4) boxes in this convention -> x1 y1 x2 y2 pixels with the far corner one past the box."""
    return boxes + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=boxes.dtype, device=boxes.device)


def apply_deltas(deltas: Tensor, boxes: Tensor, std_dev) -> Tensor:
    """matterport's `apply_box_deltas_graph` in its order of operations (no clamp on dw, dh); takes the
    arguments of `boxes.decode_deltas`.

    deltas: (..., 4) dx dy dw dh divided by std_dev; boxes: (..., 4) x1 y1 x2 y2. Returns (..., 4).
    """
    std = torch.as_tensor(std_dev, dtype=deltas.dtype, device=deltas.device)
    deltas = deltas * std  # matterport multiplies by BBOX_STD_DEV
    height = boxes[..., 3] - boxes[..., 1]
    width = boxes[..., 2] - boxes[..., 0]
    center_y = boxes[..., 1] + 0.5 * height + deltas[..., 1] * height
    center_x = boxes[..., 0] + 0.5 * width + deltas[..., 0] * width
    height = height * torch.exp(deltas[..., 3])
    width = width * torch.exp(deltas[..., 2])
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return torch.stack((x1, y1, x1 + width, y1 + height), dim=-1)  # y2 = y1 + h, x2 = x1 + w


def window_in_frame(window: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    """Pixel window (y1, x1, y2, x2), y2 x2 one past the image -> the same window in this convention."""
    y1, x1, y2, x2 = window
    if torch.jit.is_tracing():  # ONNX export passes the window as graph values; float() would freeze the example's
        return y1, x1, y2 - 1, x2 - 1
    return float(y1), float(x1), float(y2 - 1), float(x2 - 1)


def image_frame(image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The whole padded image as a window (y1, x1, y2, x2): matterport clips proposals to [0, 1]."""
    if torch.jit.is_tracing():  # traced sizes are graph values; float() would freeze the example's padded size
        return 0.0, 0.0, image_size[0] - 1, image_size[1] - 1
    return 0.0, 0.0, float(image_size[0] - 1), float(image_size[1] - 1)


def unmold_boxes(boxes: Tensor, window: tuple[int, int, int, int], image_size: tuple[int, int], original_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """matterport's `unmold_detections` for the boxes: (D, 4) in this convention -> ((D, 4) x1 y1 x2 y2
    whole pixels of the original image, far corner one past the box; (D,) bool, False for empty boxes).

    The window is normalised as the boxes are (in float64, as the references show for anchors: matterport's
    `norm_boxes` would round to float32); the boxes are then taken relative to it and mapped to the original
    image with round-half-even (np.around).
    """
    padded_h, padded_w = image_size
    y1, x1, y2, x2 = window
    window_n = torch.tensor([y1 / (padded_h - 1), x1 / (padded_w - 1), (y2 - 1) / (padded_h - 1), (x2 - 1) / (padded_w - 1)], dtype=torch.float64)
    height_n = window_n[2] - window_n[0]
    width_n = window_n[3] - window_n[1]
    normalized = to_normalized(boxes.to(torch.float64), image_size)  # (D, 4) y1 x1 y2 x2
    shift = window_n[[0, 1, 0, 1]].to(boxes.device)
    scale = torch.stack((height_n, width_n, height_n, width_n)).to(boxes.device)
    relative = (normalized - shift) / scale
    orig_h, orig_w = original_size
    factor = torch.tensor([orig_h - 1, orig_w - 1, orig_h - 1, orig_w - 1], dtype=torch.float64, device=boxes.device)
    corner = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64, device=boxes.device)
    rounded = torch.round(relative * factor + corner)  # (D, 4) y1 x1 y2 x2, whole pixels
    keep = (rounded[:, 2] - rounded[:, 0]) * (rounded[:, 3] - rounded[:, 1]) > 0  # matterport drops empty boxes
    return rounded[:, [1, 0, 3, 2]], keep


def paste_masks_like_matterport(masks: Tensor, boxes: Tensor, height: int, width: int, threshold: float) -> Tensor:
    """matterport's `unmold_mask`: each (M, M) mask resized to its whole-pixel box with skimage's resize,
    then >= threshold, placed in an empty (H, W) image. masks: (D, M, M); boxes: (D, 4) x1 y1 x2 y2
    (rounded to whole pixels first). Returns (D, H, W) bool."""
    full = torch.zeros((len(masks), height, width), dtype=torch.bool, device=masks.device)
    corners = torch.round(boxes.to(torch.float64)).to(torch.int64).tolist()
    for i, (x1, y1, x2, y2) in enumerate(corners):
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if x2 <= x1 or y2 <= y1:
            continue
        resized = resize_like_skimage(masks[i], (y2 - y1, x2 - x1))  # (y2 - y1, x2 - x1) float64
        full[i, y1:y2, x1:x2] = resized >= threshold
    return full


def unmold_detections(boxes: Tensor, scores: Tensor, labels: Tensor, mask_probs: Tensor, window: tuple[int, int, int, int],
                      image_size: tuple[int, int], original_size: tuple[int, int], threshold: float):
    """matterport's `unmold_detections` for one image: boxes (D, 4) in this convention, scores (D,),
    labels (D,), mask_probs (D, M, M) -> (boxes (K, 4) x1 y1 x2 y2 whole original pixels, scores (K,),
    labels (K,), masks (K, H, W) bool), detections whose rounded box is empty dropped."""
    pixel_boxes, keep = unmold_boxes(boxes, window, image_size, original_size)
    pixel_boxes = pixel_boxes[keep].to(boxes.dtype)
    masks = paste_masks_like_matterport(mask_probs[keep], pixel_boxes, original_size[0], original_size[1], threshold)
    return pixel_boxes, scores[keep], labels[keep], masks


class MatterportFrame(PixelFrame):
    """matterport's arithmetic for the stages that `PixelFrame` serves: anchors and ground truth shifted to the
    (H - 1) convention, `apply_box_deltas_graph`, tf.nn.top_k's order among ties, proposals clipped to the
    padded image, detections clipped to the window in this convention, and `unmold_detections`."""

    def from_pixels(self, boxes: Tensor) -> Tensor:
        return pixels_to_frame(boxes)

    def to_pixels(self, boxes: Tensor) -> Tensor:
        return frame_to_pixels(boxes)

    def decode(self, deltas: Tensor, boxes: Tensor, std_dev) -> Tensor:
        return apply_deltas(deltas, boxes, std_dev)

    def top_k(self, scores: Tensor, k) -> Tensor:
        return top_k_stable(scores, k)

    def proposal_windows(self, windows: list, image_size: tuple[int, int]) -> list:
        return [image_frame(image_size)] * len(windows)

    def detection_window(self, window):
        return window_in_frame(window)

    def mask_targets(self, masks: Tensor, rois: Tensor, matched_gt: Tensor, window, padded_size: tuple[int, int],
                     mask_size: int) -> Tensor:
        """matterport's `detection_targets_graph`: crop_and_resize of the ground-truth masks (in the padded
        image) at the normalised ROIs, rounded half to even. masks: (G, h, w) of the resized image."""
        if len(rois) == 0:
            return rois.new_zeros((0, mask_size, mask_size))
        y1, x1, y2, x2 = window
        padded = masks.new_zeros((masks.shape[0], 1, *padded_size), dtype=rois.dtype)  # (G, 1, Hp, Wp)
        padded[:, 0, y1:y2, x1:x2] = masks.to(rois.dtype)
        cut = crop_and_resize(padded, to_normalized(rois, padded_size), matched_gt, mask_size)  # (P, 1, M, M)
        return torch.round(cut[:, 0])

    def minimize_masks(self, masks: Tensor, boxes: Tensor, window, mini_shape: tuple[int, int]) -> Tensor:
        """matterport's `minimize_mask` (`load_image_gt` with USE_MINI_MASK): each mask of the resized image cut
        to its box and resized to mini_shape with skimage's resize (bilinear), then rounded half to even.

        masks: (G, h, w) bool of the resized image (the window of the padded batch); boxes: (G, 4) in this
        frame of the padded batch. Returns (G, *mini_shape) float in {0, 1}.
        """
        top, left = window[0], window[1]
        shift = torch.tensor([left, top, left, top], dtype=boxes.dtype, device=boxes.device)
        pixels = frame_to_pixels(boxes) - shift  # (G, 4) x1 y1 x2 y2, far corner one past, in the resized image
        height, width = masks.shape[-2:]
        mini = torch.zeros((len(masks), *mini_shape), dtype=torch.float64, device=masks.device)
        for i, (x1, y1, x2, y2) in enumerate(pixels.tolist()):
            x1, y1 = max(int(x1 // 1), 0), max(int(y1 // 1), 0)
            x2, y2 = min(-int(-x2 // 1), width), min(-int(-y2 // 1), height)
            if x2 <= x1 or y2 <= y1:
                raise ValueError(f"ground-truth box {i} {boxes[i].tolist()} covers no pixel of its {height}x{width} mask")
            mini[i] = torch.round(resize_like_skimage(masks[i, y1:y2, x1:x2].to(torch.float64), tuple(mini_shape)))
        return mini

    def mini_mask_targets(self, mini_masks: Tensor, gt_boxes: Tensor, rois: Tensor, matched_gt: Tensor, mask_size: int) -> Tensor:
        """matterport's `detection_targets_graph` with USE_MINI_MASK: each ROI taken into its ground-truth box's
        normalised frame ((y1 - gy1) / (gy2 - gy1), ...; the (H - 1) scale cancels), the mini-mask cropped there
        with crop_and_resize and rounded half to even.

        mini_masks: (G, m, m); gt_boxes: (G, 4) and rois: (P, 4) in this frame; matched_gt: (P,). Returns (P, M, M).
        """
        if len(rois) == 0:
            return rois.new_zeros((0, mask_size, mask_size))
        gt = gt_boxes[matched_gt]  # (P, 4) x1 y1 x2 y2
        gt_h, gt_w = gt[:, 3] - gt[:, 1], gt[:, 2] - gt[:, 0]
        boxes = torch.stack(((rois[:, 1] - gt[:, 1]) / gt_h, (rois[:, 0] - gt[:, 0]) / gt_w,
                             (rois[:, 3] - gt[:, 1]) / gt_h, (rois[:, 2] - gt[:, 0]) / gt_w), dim=1)  # (P, 4) y1 x1 y2 x2
        cut = crop_and_resize(mini_masks[:, None].to(rois.dtype), boxes, matched_gt, mask_size)  # (P, 1, M, M)
        return torch.round(cut[:, 0])

    def to_detections(self, boxes: Tensor, labels: Tensor, scores: Tensor, mask_probs: Tensor, window,
                      padded_size: tuple[int, int], original_size: tuple[int, int], mask_threshold: float) -> Detections:
        """matterport's `unmold_detections`: whole-pixel boxes, empty ones dropped, masks resized with skimage."""
        boxes, scores, labels, masks = unmold_detections(boxes, scores, labels, mask_probs, window, padded_size, original_size, mask_threshold)
        return Detections(boxes.float(), labels, scores.float(), masks)

"""Name mapping for torchvision's `maskrcnn_resnet50_fpn_v2` (Li et al., 2021, "Benchmarking Detection
Transfer Learning with Vision Transformers"), loaded into our MaskRCNN with `Config.torchvision_v2()`.

v2 differs from v1 only in layout; every inference setting (anchors, RPN and detection thresholds,
resizing) is v1's:
- FPN: each 1x1 lateral and 3x3 output conv has no bias and is followed by BatchNorm2d (no ReLU);
- RPN head: two 3x3 convs with bias and ReLU instead of one;
- box head: four 3x3 convs of 256 (no bias) + BatchNorm2d + ReLU, then one fully connected layer of 1024
  with ReLU (torchvision's FastRCNNConvFCHead), instead of two fully connected layers;
- mask head: its four 3x3 convs have no bias and are followed by BatchNorm2d.

torchvision wraps a conv and its norm in `Conv2dNormActivation`, a Sequential (conv at .0, norm at .1);
our heads are flat Sequentials, so the index arithmetic below places each torchvision block at its slot.
"""
from __future__ import annotations

BOX_HEAD_CONVS = 4  # torchvision's FastRCNNConvFCHead([256] * 4, [1024])
_BN = r"(weight|bias|running_mean|running_var)"  # num_batches_tracked is skipped by load_mapped


def _flat_index(block: str, part: str, per_block: int) -> int:
    """torchvision's block i, part j (0: conv, 1: norm) -> its index in our flat Sequential of
    per_block layers per block (conv, norm, ReLU)."""
    return per_block * int(block) + int(part)


# torchvision name pattern -> our name template (applied in order; the first match wins)
V2_RULES = [
    (r"backbone\.body\.(.+)", r"backbone.trunk.\1"),
    # FPN: conv_norm(...) is Sequential(conv, BatchNorm2d), the same nesting as Conv2dNormActivation.
    (r"backbone\.fpn\.inner_blocks\.(\d)\.0\.weight", r"backbone.fpn.lateral.\1.0.weight"),
    (r"backbone\.fpn\.inner_blocks\.(\d)\.1\." + _BN, r"backbone.fpn.lateral.\1.1.\2"),
    (r"backbone\.fpn\.layer_blocks\.(\d)\.0\.weight", r"backbone.fpn.output.\1.0.weight"),
    (r"backbone\.fpn\.layer_blocks\.(\d)\.1\." + _BN, r"backbone.fpn.output.\1.1.\2"),
    # RPN: Sequential(conv, ReLU, conv, ReLU) on our side.
    (r"rpn\.head\.conv\.(\d)\.0\.(weight|bias)", lambda m: f"rpn.conv.{_flat_index(m[1], '0', 2)}.{m[2]}"),
    (r"rpn\.head\.cls_logits\.(weight|bias)", r"rpn.objectness.\1"),
    (r"rpn\.head\.bbox_pred\.(weight|bias)", r"rpn.deltas.\1"),
    # Box head: ours is (conv, BN, ReLU) x 4, Flatten, Linear, ReLU; torchvision's is
    # Conv2dNormActivation x 4 (indices 0-3), Flatten (4), Linear (5), ReLU (6).
    (r"roi_heads\.box_head\.(\d)\.0\.weight", lambda m: f"box_head.shared.{_flat_index(m[1], '0', 3)}.weight"),
    (r"roi_heads\.box_head\.(\d)\.1\." + _BN, lambda m: f"box_head.shared.{_flat_index(m[1], '1', 3)}.{m[2]}"),
    (rf"roi_heads\.box_head\.{BOX_HEAD_CONVS + 1}\.(weight|bias)", rf"box_head.shared.{3 * BOX_HEAD_CONVS + 1}.\1"),
    (r"roi_heads\.box_predictor\.cls_score\.(weight|bias)", r"box_head.class_logits.\1"),
    (r"roi_heads\.box_predictor\.bbox_pred\.(weight|bias)", r"box_head.deltas.\1"),
    # Mask head: ours is (conv, BN, ReLU) x 4 in `convs`.
    (r"roi_heads\.mask_head\.(\d)\.0\.weight", lambda m: f"mask_head.convs.{_flat_index(m[1], '0', 3)}.weight"),
    (r"roi_heads\.mask_head\.(\d)\.1\." + _BN, lambda m: f"mask_head.convs.{_flat_index(m[1], '1', 3)}.{m[2]}"),
    (r"roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)", r"mask_head.upsample.\1"),
    (r"roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)", r"mask_head.mask_logits.\1"),
]

"""What matterport's Mask_RCNN (the seed's Keras code) computes differently from torchvision, for its
`.h5` weights to give its detections: `Config.matterport()` sets `layout="matterport"`, and
`maskrcnn.layout` hands these to the model in place of the torchvision layout's classes.

- `MatterportResNet`: the Keras `resnet_graph` (stride on the first 1x1 conv, conv biases, "same" max pool);
- `MatterportPreprocessor`: `mold_inputs` (skimage's resize of the uint8 image, black padding, mean subtracted);
- `MatterportFrame`: the normalised (H - 1) box convention, `apply_box_deltas_graph`, tf.nn.top_k's tie
  order, proposals clipped to the padded image, `unmold_detections`;
- `CropAndResizePooler`: `PyramidROIAlign` as TensorFlow's `crop_and_resize`.
"""
from .crop_and_resize import CropAndResizePooler
from .frame import MatterportFrame
from .resize import MatterportPreprocessor
from .resnet import MatterportResNet

__all__ = ["CropAndResizePooler", "MatterportFrame", "MatterportPreprocessor", "MatterportResNet"]

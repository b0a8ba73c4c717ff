"""Converting other libraries' weights into MaskRCNN models."""
from .torchvision import from_torchvision


def from_matterport(h5_path, **kwargs):
    """matterport's Keras .h5 weights -> MaskRCNN with Config.matterport() settings."""
    from .matterport import from_matterport as convert

    return convert(h5_path, **kwargs)


__all__ = ["from_torchvision", "from_matterport"]

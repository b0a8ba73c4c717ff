"""ImageNet ResNet weights into the trunk: from a state-dict file, from torch's hub cache, and the message
when they are neither cached nor downloadable (the download itself is replaced: no network in tests)."""
import urllib.error

import pytest
import torch
import torchvision

import maskrcnn
from maskrcnn import pretrained
from maskrcnn.errors import CheckpointError, ConfigError


def _model(backbone="resnet18"):
    torch.manual_seed(0)
    return maskrcnn.MaskRCNN(maskrcnn.Config.demo(backbone=backbone))


def _no_download(url, path):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_state_dict_file_is_copied_into_the_trunk(tmp_path):
    torch.manual_seed(1)
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    model = _model()
    assert not torch.equal(model.backbone.trunk.layer3[1].conv2.weight, resnet.layer3[1].conv2.weight)
    count = pretrained.load_backbone_weights(model, path)
    trunk = model.backbone.trunk.state_dict()
    assert count == len([k for k in trunk if not k.endswith("num_batches_tracked")])
    for name, value in resnet.state_dict().items():
        if not name.startswith("fc.") and not name.endswith("num_batches_tracked"):
            assert torch.equal(trunk[name], value), name


def test_another_network_is_refused_naming_its_keys(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError) as caught:
        pretrained.load_backbone_weights(_model("resnet18"), path)
    message = str(caught.value)
    assert "resnet50.pth" in message and "layer1.0.conv3.weight" in message and "another shape" in message


def test_imagenet_from_the_hub_cache_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(pretrained, "_download", _no_download)
    url, path = pretrained.imagenet_file("resnet18")
    assert path == tmp_path / "checkpoints" / "resnet18-f37072fd.pth" and url.endswith("/resnet18-f37072fd.pth")
    path.parent.mkdir()
    torch.manual_seed(2)
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), path)
    model = _model()
    pretrained.load_backbone_weights(model, "imagenet")
    assert torch.equal(model.backbone.trunk.conv1.weight, resnet.conv1.weight)


def test_offline_message_names_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(pretrained, "_download", _no_download)
    with pytest.raises(CheckpointError) as caught:
        pretrained.load_backbone_weights(_model("resnet50"), "imagenet")
    message = str(caught.value)
    assert "resnet50-0676ba61.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message and "name resolution" in message


def test_matterport_layout_is_refused():
    model = maskrcnn.MaskRCNN(maskrcnn.Config.matterport(num_classes=2, backbone="resnet50"))
    with pytest.raises(ConfigError, match="layout"):
        pretrained.load_backbone_weights(model, "imagenet")

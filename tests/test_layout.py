"""The layout (layout.py): torchvision's or matterport's arithmetic, chosen once from `Config.layout`; the
package's import graph (no cycles, the matterport package reached only through the layout)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from maskrcnn import Config, MaskRCNN
from maskrcnn.backbone import ResNetTrunk
from maskrcnn.errors import ConfigError
from maskrcnn.frame import PixelFrame
from maskrcnn.matterport import CropAndResizePooler, MatterportFrame, MatterportPreprocessor, MatterportResNet
from maskrcnn.preprocess import Preprocessor
from maskrcnn.roi_align import PyramidROIAlign

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "maskrcnn"
# The stages: they are handed the layout's objects and must not know which layout they serve.
STAGES = ("anchors", "backbone", "box_head", "boxes", "frame", "mask_head", "matching", "model", "postprocess",
          "preprocess", "proposals", "roi_align", "rpn", "structures", "export")


def small(preset, **changes) -> Config:
    return preset(num_classes=3, backbone="resnet50", image_min_dim=64, image_max_dim=64, **changes)


def test_torchvision_layout_parts():
    model = MaskRCNN(small(Config.torchvision))
    assert type(model.frame) is PixelFrame and type(model.preprocessor) is Preprocessor
    assert isinstance(model.backbone.trunk, ResNetTrunk) and model.backbone.channels_last
    assert isinstance(model.box_roi_align, PyramidROIAlign) and isinstance(model.mask_roi_align, PyramidROIAlign)
    assert model.anchor_generator.frame is model.frame


def test_matterport_layout_parts():
    model = MaskRCNN(small(Config.matterport))
    assert isinstance(model.frame, MatterportFrame) and isinstance(model.preprocessor, MatterportPreprocessor)
    assert isinstance(model.backbone.trunk, MatterportResNet) and not model.backbone.channels_last
    assert isinstance(model.box_roi_align, CropAndResizePooler) and model.box_roi_align.output_size == 7
    assert isinstance(model.mask_roi_align, CropAndResizePooler) and model.mask_roi_align.output_size == 14
    assert model.anchor_generator.frame is model.frame
    assert model.propose_inference.keywords["frame"] is model.frame and model.detection_layer.keywords["frame"] is model.frame


def test_unknown_layout_is_refused():
    with pytest.raises(ConfigError, match="'layout'.*must be one of 'torchvision', 'matterport'"):
        Config(layout="detectron2")


def test_configs_with_the_former_four_layout_fields_still_load():
    data = Config.matterport().to_dict()
    del data["layout"]
    data.update(backbone_layout="matterport", box_convention="matterport", roi_align_method="crop_and_resize",
                image_resize_method="skimage")
    assert Config.from_dict(data) == Config.matterport()
    data = Config.torchvision().to_dict()
    del data["layout"]
    data.update(backbone_layout="torchvision", box_convention="pixels", roi_align_method="roi_align", image_resize_method="bilinear")
    assert Config.from_dict(data) == Config.torchvision()


def test_a_mix_of_the_two_layouts_is_refused_naming_the_fields():
    data = Config.torchvision().to_dict()
    data.update(box_convention="matterport", roi_align_method="roi_align")
    with pytest.raises(ConfigError, match="box_convention='matterport', roi_align_method='roi_align'.*mix the torchvision and matterport"):
        Config.from_dict(data)


# ------------------------------------------------------------------------------------------ import graph
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports anywhere (functions included), outside `if TYPE_CHECKING:`."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skipped = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
               for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
            found.update(submodules or ([target] if target in modules else []))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
    return found - {name}


def _import_graph() -> dict[str, set[str]]:
    paths = list(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def test_no_import_cycles_in_the_package():
    graph = _import_graph()
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for dependency in sorted(graph[module]):
            if state.get(dependency) == "open":
                cycles.append(path[path.index(dependency):] + [dependency])
            elif dependency not in state:
                visit(dependency, path + [dependency])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert graph["maskrcnn.model"] and not cycles, f"import cycles: {cycles}"


def test_only_the_layout_reaches_the_matterport_package():
    graph = _import_graph()
    users = {m for m, deps in graph.items() if any(d.startswith("maskrcnn.matterport") for d in deps)}
    assert {m for m in users if not m.startswith(("maskrcnn.matterport", "maskrcnn.interop"))} == {"maskrcnn.layout"}


@pytest.mark.parametrize("stage", STAGES)
def test_stages_never_name_a_layout(stage):
    strings = [node.value for node in ast.walk(ast.parse((PACKAGE / f"{stage}.py").read_text()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert not [s for s in strings if s in ("matterport", "torchvision", "pixels", "skimage", "crop_and_resize")]

"""The `maskrcnn` command end to end: train, evaluate and predict on a small COCO data set the test writes,
all through the command line, with a tiny model; plus help texts and user errors (exit 2, one line, no traceback)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from maskrcnn.cli import EXAMPLES, main
from maskrcnn.evaluation import METRIC_NAMES

SRC = Path(__file__).resolve().parents[1] / "src"
# A tiny model: the demo preset (ResNet-18, images used at their own size) made narrower still.
TINY = ["fpn_channels=16", "rpn_conv_channels=16", "box_head_channels=32", "mask_head_channels=16",
        "images_per_batch=2", "lr_warmup_steps=0", "train_rois_per_image=16", "rpn_train_anchors_per_image=32",
        "rpn_pre_nms_limit_training=128", "post_nms_rois_training=64", "rpn_pre_nms_limit_inference=64",
        "post_nms_rois_inference=32", "detection_max_instances=5"]


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "maskrcnn", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=170)


def _rle_compressed(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _rle_uncompressed(mask: np.ndarray) -> dict:
    flat = mask.astype(np.uint8).flatten(order="F")  # COCO runs go down the columns
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [len(flat)]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts  # runs start with background
    return {"size": list(mask.shape), "counts": counts}


def write_coco_set(root: Path) -> tuple[Path, Path]:
    """Five images (one 64x80, one without annotations), categories 2, 5, 9 (gaps), polygons, compressed and
    uncompressed RLE and one crowd region; shapes painted in their class colour on a noisy background."""
    images_dir = root / "images"
    images_dir.mkdir()
    rng = np.random.default_rng(0)
    colours = {2: (220, 40, 40), 5: (40, 200, 40), 9: (40, 60, 230)}
    # (image id, height, width, [(category, x, y, side, kind)])
    layout = [
        (1, 64, 64, [(2, 8, 8, 20, "polygon"), (5, 36, 30, 18, "rle")]),
        (2, 64, 80, [(9, 40, 10, 24, "counts"), (2, 6, 34, 22, "polygon")]),
        (3, 64, 64, [(5, 10, 10, 26, "polygon"), (2, 40, 40, 16, "crowd")]),
        (4, 64, 64, []),
        (5, 64, 64, [(9, 30, 6, 28, "polygon"), (2, 4, 40, 18, "polygon")]),
    ]
    images, annotations = [], []
    for image_id, height, width, shapes in layout:
        pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        for category, x, y, side, kind in shapes:
            mask = np.zeros((height, width), dtype=bool)
            mask[y:y + side, x:x + side] = True
            pixels[mask] = colours[category]
            segmentation = {
                "polygon": [[x, y, x + side, y, x + side, y + side, x, y + side]],
                "rle": _rle_compressed(mask),
                "counts": _rle_uncompressed(mask),
                "crowd": _rle_uncompressed(mask),
            }[kind]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, side, side], "area": side * side, "segmentation": segmentation,
                                "iscrowd": int(kind == "crowd")})
        name = f"photo_{image_id}.png"
        Image.fromarray(pixels).save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    categories = [{"id": 2, "name": "red"}, {"id": 5, "name": "green"}, {"id": 9, "name": "blue"}]
    annotation_file = root / "annotations.json"
    annotation_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return annotation_file, images_dir


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    return write_coco_set(tmp_path_factory.mktemp("coco"))


def test_train_evaluate_predict_end_to_end(coco_set, tmp_path):
    annotation_file, images_dir = coco_set
    data = f"coco:{annotation_file}:{images_dir}"
    before = {p.name: p.read_bytes() for p in images_dir.iterdir()}
    out = tmp_path / "run"
    overrides = [arg for field in TINY for arg in ("--set", field)]

    trained = run_cli("train", "--data", data, "--preset", "demo", *overrides, "--out", str(out), "--epochs", "1",
                      "--no-progress")
    assert trained.returncode == 0, trained.stderr
    assert (out / "checkpoints" / "epoch_0001.pt").is_file()
    assert (out / "model.pt").is_file()
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    # 5 images, 1 held out for validation (10%, at least one), batches of 2: two steps, then the validation score.
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    validation = [r for r in records if "val_box_map50" in r]
    assert len(validation) == 1 and validation[0]["epoch"] == 1
    assert "validating on 1" in trained.stdout and "validation box mAP@0.5" in trained.stdout

    metrics_file, results_file = tmp_path / "metrics.json", tmp_path / "coco_results.json"
    evaluated = run_cli("evaluate", "--weights", str(out / "model.pt"), "--data", data, "--out", str(metrics_file),
                        "--results", str(results_file), "--no-progress")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(metrics_file.read_text())
    for iou_type in ("bbox", "segm"):
        assert set(METRIC_NAMES) <= set(metrics[iou_type])
        assert set(metrics[iou_type]["per_class"]) == {"red", "green", "blue"}
        for name in METRIC_NAMES:
            value = metrics[iou_type][name]
            assert value is None or 0.0 <= value <= 1.0
    table = evaluated.stdout
    assert all(name in table for name in METRIC_NAMES) and "bbox" in table and "segm" in table
    # The results use the file's own (gapped) category ids, so pycocotools reads them against the file.
    results = json.loads(results_file.read_text())
    assert {r["category_id"] for r in results} <= {2, 5, 9}

    predictions = tmp_path / "predictions"
    predicted = run_cli("predict", "--weights", str(out / "model.pt"), str(images_dir), "--out", str(predictions),
                        "--score-threshold", "0.0")
    assert predicted.returncode == 0, predicted.stderr
    pictures = sorted(p.name for p in (predictions / "images").iterdir())
    assert pictures == [f"photo_{i}.png" for i in range(1, 6)]
    assert Image.open(predictions / "images" / "photo_2.png").size == (80, 64)  # the input's own size
    assert "predict" in predicted.stderr and "5/5" in predicted.stderr  # the progress bar
    index = json.loads((predictions / "images.json").read_text())
    ground = COCO()
    ground.dataset = {"images": index["images"], "categories": index["categories"], "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        ground.createIndex()
        loaded = ground.loadRes(str(predictions / "results.json"))
    detections = json.loads((predictions / "results.json").read_text())
    assert len(detections) > 0 and len(loaded.getAnnIds()) == len(detections)
    assert {d["category_id"] for d in detections} <= {2, 5, 9}  # the training file's own ids, as evaluate writes
    assert {c["id"] for c in index["categories"]} == {2, 5, 9}
    assert {c["name"] for c in index["categories"]} == {"red", "green", "blue"}
    # The user's files are untouched.
    assert {p.name: p.read_bytes() for p in images_dir.iterdir()} == before


def test_bad_data_path_is_exit_2_with_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "annotations.json"
    result = run_cli("train", "--data", f"coco:{missing}", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and lines[0].startswith("maskrcnn train: error:")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_help_says_what_it_does_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    assert "Example" in text and f"maskrcnn {command}" in text


def test_user_errors_in_process_are_exit_2_without_traceback(tmp_path, capsys):
    # A weights file that does not exist.
    assert main(["evaluate", "--weights", str(tmp_path / "none.pt"), "--data", "shapes:2:64"]) == 2
    err = capsys.readouterr().err
    assert "none.pt" in err and "Traceback" not in err
    # A config override of an unknown field is named.
    assert main(["train", "--data", "shapes:2:64", "--preset", "demo", "--set", "no_such_field=1",
                 "--out", str(tmp_path / "r")]) == 2
    assert "no_such_field" in capsys.readouterr().err
    # An --out holding a run's checkpoints is not overwritten without --resume.
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old" / "checkpoints" / "epoch_0001.pt").write_bytes(b"precious")
    assert main(["train", "--data", "shapes:2:64", "--out", str(tmp_path / "old")]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "old" / "checkpoints" / "epoch_0001.pt").read_bytes() == b"precious"
    # --debug shows the real exception instead.
    with pytest.raises(FileNotFoundError):
        main(["--debug", "evaluate", "--weights", str(tmp_path / "none.pt"), "--data", "shapes:2:64"])


def test_validate_lists_every_unreadable_image_and_modifies_nothing(coco_set, tmp_path, capsys):
    annotation_file, images_dir = coco_set
    broken = tmp_path / "images"
    broken.mkdir()
    for image in images_dir.iterdir():
        broken.joinpath(image.name).write_bytes(image.read_bytes())
    (broken / "photo_1.png").write_bytes(b"")  # zero bytes
    (broken / "photo_3.png").write_bytes((images_dir / "photo_3.png").read_bytes()[:200])  # truncated
    (broken / "photo_5.png").unlink()  # missing
    before = {p.name: p.read_bytes() for p in broken.iterdir()}
    code = main(["validate", "--data", f"coco:{annotation_file}:{broken}"])
    out = capsys.readouterr().out
    assert code == 1
    problem_lines = [line for line in out.splitlines() if "photo_" in line]
    for name in ("photo_1.png", "photo_3.png", "photo_5.png"):
        assert any(name in line for line in problem_lines), name
    assert not any("photo_2.png" in line or "photo_4.png" in line for line in problem_lines)
    assert "5 images checked" in out
    assert {p.name: p.read_bytes() for p in broken.iterdir()} == before
    # The clean set passes.
    assert main(["validate", "--data", f"coco:{annotation_file}:{images_dir}"]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


def test_validate_exits_zero_when_every_problem_is_only_a_warning(coco_set, tmp_path, capsys):
    annotation_file, images_dir = coco_set
    data = json.loads(Path(annotation_file).read_text())
    extra = dict(data["annotations"][0], id=999, bbox=[10, 10, 0, 5], segmentation=[])  # zero width: skipped, not fatal
    data["annotations"].append(extra)
    edited = tmp_path / "with_a_zero_width_box.json"
    edited.write_text(json.dumps(data))
    assert main(["validate", "--data", f"coco:{edited}:{images_dir}"]) == 0
    out = capsys.readouterr().out
    assert "999" in out and "1 problem(s)" in out and "fatal" not in out.splitlines()[-1]


TINY_ARGS = ["--preset", "demo", *[arg for field in TINY for arg in ("--set", field)], "--no-progress"]


def _copy_images(images_dir: Path, folder: Path) -> Path:
    folder.mkdir()
    for image in images_dir.iterdir():
        folder.joinpath(image.name).write_bytes(image.read_bytes())
    return folder


def test_train_on_unreadable_images_is_an_error_naming_them(coco_set, tmp_path, capsys):
    annotation_file, images_dir = coco_set
    broken = _copy_images(images_dir, tmp_path / "broken")
    for image in broken.iterdir():
        image.write_bytes(b"not an image")
    data = ["train", "--data", f"coco:{annotation_file}:{broken}", *TINY_ARGS, "--val-fraction", "0", "--epochs", "1"]
    assert main([*data, "--out", str(tmp_path / "a")]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "photo_" in errors[0] and "max_unreadable_fraction=0.05" in errors[0]
    assert "--max-unreadable-fraction" in errors[0] and "trained" not in captured.out
    # Allowing every image to be unreadable still trains on nothing: no batch at all is an error too.
    assert main([*data, "--max-unreadable-fraction", "1", "--out", str(tmp_path / "b")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "no batch" in errors[0] and "photo_1.png" in errors[0]
    assert not (tmp_path / "b" / "model.pt").exists()


def test_one_missing_image_of_five_stops_training_unless_allowed_and_is_named_once(coco_set, tmp_path, capsys):
    annotation_file, images_dir = coco_set
    folder = _copy_images(images_dir, tmp_path / "images")
    (folder / "photo_3.png").unlink()
    data = ["train", "--data", f"coco:{annotation_file}:{folder}", *TINY_ARGS, "--val-fraction", "0", "--epochs", "1"]
    assert main([*data, "--out", str(tmp_path / "a")]) == 2  # 1 of 5 is more than 5%
    assert "photo_3.png" in capsys.readouterr().err
    assert main([*data, "--max-unreadable-fraction", "0.25", "--out", str(tmp_path / "b")]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "photo_3.png" in line]
    # The path and the image id each said once.
    assert len(warning) == 1 and warning[0].count("photo_3.png") == 1 and warning[0].count("image 3") == 1
    assert (tmp_path / "b" / "model.pt").is_file()


def test_max_steps_backbone_weights_and_checkpoint_every_from_the_command_line(tmp_path, capsys):
    import torchvision

    trunk = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), trunk)
    out = tmp_path / "run"
    assert main(["train", "--data", "shapes:6:64", *TINY_ARGS, "--val-fraction", "0", "--epochs", "3",
                 "--max-steps", "2", "--checkpoint-every", "1", "--backbone-weights", str(trunk), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "backbone: 100 tensors from" in printed and "stopped at step 2 (max_steps=2)" in printed
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["epoch_0001_step_00000001.pt",
                                                                         "epoch_0001_step_00000002.pt"]


def test_messages_for_people(coco_set, tmp_path, capsys):
    # A text file given as weights says it is not a checkpoint, naming it.
    text = tmp_path / "notes.txt"
    text.write_text("these are my notes, not weights\n")
    assert main(["evaluate", "--weights", str(text), "--data", "shapes:2:64"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "not a checkpoint" in err and "text file" in err and "code/objects" not in err
    # num_classes that differs from the data set is refused, saying how to fix it.
    assert main(["train", "--data", "shapes:2:64", *TINY_ARGS, "--set", "num_classes=7", "--out", str(tmp_path / "r")]) == 2
    assert "--set num_classes=4" in capsys.readouterr().err
    # The advice to raise max_skip_fraction can be followed: the flag it names lets the data set load.
    annotation_file, images_dir = coco_set
    data = json.loads(annotation_file.read_text())
    for annotation in data["annotations"][:5]:
        annotation["bbox"] = [0, 0, 0, 0]  # zero size: skipped
    skipping = tmp_path / "skipping.json"
    skipping.write_text(json.dumps(data))
    spec = f"coco:{skipping}:{images_dir}"
    assert main(["train", "--data", spec, "--out", str(tmp_path / "s"), "--config", "x.yaml", "--preset", "demo"]) == 2
    advice = [line for line in capsys.readouterr().err.splitlines() if ": error:" in line][0]
    assert "--max-skip-fraction 0.63" in advice  # 5 of 8 skipped
    assert main(["train", "--data", spec, "--out", str(tmp_path / "s"), "--config", "x.yaml", "--preset", "demo",
                 "--max-skip-fraction", "0.63"]) == 2
    assert "either a config file" in capsys.readouterr().err  # past the data set, to the next check


def test_evaluate_usage_shows_weights_required_and_where_images_are_read(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    usage = text.split("\n\n")[0]
    assert "(--weights WEIGHTS | --onnx" in usage and "[--weights" not in usage
    assert "read from the folder that holds FILE.json" in " ".join(text.split())
    assert main(["evaluate", "--data", "shapes:2:64"]) == 2  # neither --weights nor --onnx
    assert "maskrcnn evaluate needs the model: --weights W" in capsys.readouterr().err


def test_config_list_prints_every_field_with_its_presets(capsys):
    import dataclasses

    from maskrcnn import Config

    assert main(["config", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for field in dataclasses.fields(Config):
        line = next(line for line in lines if line.startswith(f"{field.name} ("))
        meaning = lines[lines.index(line) + 1]
        assert meaning.startswith("    ") and meaning.strip(), field.name
    backbone = next(line for line in lines if line.startswith("backbone ("))
    assert backbone == ("backbone (str): torchvision 'resnet50'; torchvision_v2 'resnet50'; matterport 'resnet101'; "
                        "demo 'resnet18'")


def test_the_command_runs_exit_handlers_flushes_output_and_waits_for_a_running_thread(tmp_path):
    """`maskrcnn` leaves without libtorch's static destructors (cli.run), but only after Python's exit
    handlers ran and the output was flushed; with a non-daemon thread still running it exits the ordinary
    way, which lets the thread finish."""
    marker = tmp_path / "thread_finished"
    program = (
        "import atexit, sys, threading, time\n"
        "from maskrcnn import cli\n"
        "atexit.register(print, 'exit handler ran')\n"
        "if sys.argv[1] == 'thread':\n"
        f"    threading.Thread(target=lambda: (time.sleep(1.0), open({str(marker)!r}, 'w').close())).start()\n"
        "sys.argv = ['maskrcnn', 'config']\n"
        "sys.stdout.write('buffered, no newline')\n"
        "cli.run()\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for case in ("plain", "thread"):
        done = subprocess.run([sys.executable, "-c", program, case], capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("buffered, no newline") and "image_min_dim" in done.stdout
        assert done.stdout.rstrip().endswith("exit handler ran")
    assert marker.exists()

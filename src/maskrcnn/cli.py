"""The `maskrcnn` command: thin subcommands that parse arguments and call library functions.

Errors from the user's data, files or settings are printed as one clear message (no traceback unless
--debug) and the command exits with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

EXAMPLES = {
    "demo": "maskrcnn demo --out demo_out --seed 0",
    "train": "maskrcnn train --data coco:annotations.json:images --config config.yaml --out runs/exp1 --epochs 12",
    "evaluate": "maskrcnn evaluate --weights runs/exp1/model.pt --data coco:val.json:val_images --out metrics.json",
    "predict": "maskrcnn predict --weights runs/exp1/model.pt photos/ --out predictions --score-threshold 0.5",
    "validate": "maskrcnn validate --data coco:annotations.json:images",
    "export": "maskrcnn export --weights runs/exp1/model.pt --out model.onnx",
    "convert": "maskrcnn convert mask_rcnn_coco.h5 model.pt --class-names coco_names.txt",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskrcnn", description="Mask R-CNN instance segmentation: train, evaluate, predict, export.")
    parser.add_argument("--debug", action="store_true", help="show the full Python traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=f"{help_text}\n\nExample:\n  {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", help="show the full Python traceback on errors")
        return p

    demo = command("demo", "Train a small model from scratch on built-in synthetic shapes, evaluate it and draw its predictions (no data or weights needed).")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--seed", type=int, default=0, help="random seed for data and training (default: 0)")
    demo.add_argument("--train-seconds", type=float, default=None, help="training time budget in seconds (default: the demo preset's)")

    data_help = "data set as FORMAT:PATHS: coco:ANNOTATIONS.json[:IMAGE_DIR], via:REGIONS.json[:IMAGE_DIR], masks:IMAGE_DIR:MASK_DIR, shapes:COUNT[:SIZE[:SEED]]"
    train = command("train", "Train Mask R-CNN on a data set; checkpoints after every epoch, resumable.")
    train.add_argument("--data", required=True, help=data_help)
    train.add_argument("--val-data", help="validation data set (default: 10%% of --data held out)")
    train.add_argument("--config", help="config file (YAML or JSON); default: Config.torchvision() with the data set's classes")
    train.add_argument("--preset", choices=["torchvision", "matterport", "demo"], default=None, help="start from a preset instead of a config file")
    train.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field (repeatable)")
    train.add_argument("--out", required=True, help="output folder: checkpoints, log, loss curve, final model.pt")
    train.add_argument("--weights", help="initial weights: a model .pt, a matterport .h5, or torchvision-coco (heads of another class count are re-initialised)")
    train.add_argument("--layers", default="all", help="heads, 3+, 4+, 5+, all, or a regular expression over parameter names")
    train.add_argument("--epochs", type=int, default=12)
    train.add_argument("--resume", action="store_true", help="go on from the last checkpoint in --out")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--workers", type=int, default=0, help="data loading worker processes")

    evaluate = command("evaluate", "Evaluate a model with the COCO metrics (box and mask AP) and print a table.")
    evaluate.add_argument("--weights", required=True, help="a model .pt, a matterport .h5, or torchvision-coco")
    evaluate.add_argument("--data", required=True, help=data_help)
    evaluate.add_argument("--out", help="write the metrics as JSON here")
    evaluate.add_argument("--results", help="write the COCO results JSON here")

    predict = command("predict", "Run a model on images or folders; write a picture per image and one COCO-results JSON.")
    predict.add_argument("inputs", nargs="+", help="image files or folders of images")
    predict.add_argument("--weights", help="a model .pt, a matterport .h5, or torchvision-coco")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--score-threshold", type=float, default=None, help="keep detections scoring at least this")
    predict.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch")
    predict.add_argument("--onnx", help="the .onnx file for --backend onnxruntime")

    validate = command("validate", "Check a data set without training and list every problem found.")
    validate.add_argument("--data", required=True, help=data_help)

    export = command("export", "Export a model to ONNX.")
    export.add_argument("--weights", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--opset", type=int, default=None)

    convert = command("convert", "Convert weights (matterport .h5, torchvision) to this library's .pt format.")
    convert.add_argument("source", help="a matterport .h5 file, a torchvision state dict .pth, or torchvision-coco")
    convert.add_argument("target", help="the .pt file to write")
    convert.add_argument("--class-names", help="a text file with one class name per line (background first, or without it)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .errors import MaskRCNNError

    try:
        return {
            "demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "validate": cmd_validate, "export": cmd_export, "convert": cmd_convert,
        }[args.command](args) or 0
    except (MaskRCNNError, ValueError, FileNotFoundError, PermissionError) as error:
        if args.debug:
            raise
        print(f"maskrcnn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"maskrcnn {args.command}: interrupted; completed checkpoints are kept", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------------------- helpers
def load_weights(spec: str):
    """A MaskRCNN from a .pt file of ours, a matterport .h5, a torchvision state dict, or torchvision-coco."""
    import maskrcnn

    if spec == "torchvision-coco":
        return maskrcnn.interop.from_torchvision(spec)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"weights file {spec} does not exist")
    if path.suffix.lower() in (".h5", ".hdf5"):
        return maskrcnn.interop.from_matterport(path)
    from .checkpoint import load_file

    data = load_file(path)
    if "config" in data:
        return maskrcnn.load(path)
    if "roi_heads.box_predictor.cls_score.weight" in data:
        return maskrcnn.interop.from_torchvision(data)
    raise ValueError(f"{spec}: not a maskrcnn model, a matterport .h5 or a torchvision Mask R-CNN state dict")


def parse_overrides(config, assignments: list[str]):
    """Apply --set FIELD=VALUE overrides (values parsed as YAML: numbers, lists, booleans)."""
    import yaml

    changes = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"--set {assignment!r}: expected FIELD=VALUE")
        name, value = assignment.split("=", 1)
        changes[name.strip()] = yaml.safe_load(value)
    return config.replace(**changes) if changes else config


def _images_in(inputs: list[str]) -> list[Path]:
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{item} does not exist")
    if not found:
        raise ValueError(f"no images found in {', '.join(inputs)}")
    return found


# ---------------------------------------------------------------------------------------------- commands
def cmd_demo(args) -> int:
    from .demo import run_demo

    metrics = run_demo(out_dir=args.out, seed=args.seed, train_seconds=args.train_seconds)
    print(f"box mAP@0.5  {metrics['box_map50']:.3f}")
    print(f"mask mAP@0.5 {metrics['mask_map50']:.3f}")
    print(f"trained {metrics['steps']} steps in {metrics['train_seconds']:.0f} s; total {metrics['total_seconds']:.0f} s")
    print(f"wrote {args.out}/metrics.json, {args.out}/loss.png and {args.out}/predictions/")
    return 0


def cmd_train(args) -> int:
    import torch

    import maskrcnn
    from .data import load_dataset_spec
    from .train import Trainer

    torch.manual_seed(args.seed)
    dataset = load_dataset_spec(args.data)
    val_dataset = load_dataset_spec(args.val_data, allow_empty=True) if args.val_data else None
    if args.config:
        config = maskrcnn.Config.load(args.config)
    else:
        preset = {"torchvision": maskrcnn.Config.torchvision, "matterport": maskrcnn.Config.matterport, "demo": maskrcnn.Config.demo}[args.preset or "torchvision"]
        config = preset(num_classes=dataset.num_classes)
    config = parse_overrides(config, args.set)
    if config.num_classes != dataset.num_classes:
        config = config.replace(num_classes=dataset.num_classes)
    model = maskrcnn.MaskRCNN(config, class_names=dataset.class_names)
    if args.weights and not args.resume:
        from .finetune import load_matching_weights

        skipped = load_matching_weights(model, load_weights(args.weights))
        if skipped:
            print("freshly initialised (shape differs from the weights): " + ", ".join(skipped))
    trainer = Trainer(model, dataset, out_dir=args.out, val_dataset=val_dataset, seed=args.seed, num_workers=args.workers)
    if args.resume and trainer.resume():
        print(f"resumed from {trainer.checkpoints.latest()} (epoch {trainer.state.epoch}, step {trainer.state.step})")
    state = trainer.train(args.epochs, layers=args.layers)
    final = maskrcnn.save(model, Path(args.out) / "model.pt")
    print(f"trained {state.step} steps over {state.epoch} epochs; wrote {final}")
    return 0


def cmd_evaluate(args) -> int:
    from tqdm import tqdm

    from .data import load_dataset_spec
    from .evaluation import CocoEvaluator, format_table

    model = load_weights(args.weights)
    dataset = load_dataset_spec(args.data, allow_empty=True)
    evaluator = CocoEvaluator(dataset)
    for i in tqdm(range(len(dataset)), desc="evaluate"):
        evaluator.add(i, model.predict([dataset.load_image(i)])[0])
    summary = evaluator.summarize()
    print(format_table(summary))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2))
    if args.results:
        evaluator.write_results(args.results)
    return 0


def cmd_predict(args) -> int:
    from tqdm import tqdm

    from .data import read_image
    from .visualize import draw_instances, save_image

    if args.backend == "onnxruntime":
        if not args.onnx:
            raise ValueError("--backend onnxruntime needs --onnx model.onnx")
        from .export import OnnxPredictor

        predictor = OnnxPredictor(args.onnx)
        class_names = predictor.class_names
    else:
        if not args.weights:
            raise ValueError("--weights is required (a model .pt, a matterport .h5 or torchvision-coco)")
        predictor = load_weights(args.weights)
        class_names = predictor.class_names
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    results = []
    for image_id, path in enumerate(tqdm(_images_in(args.inputs), desc="predict")):
        image = read_image(path)
        found = predictor.predict([image], score_threshold=args.score_threshold)[0]
        save_image(draw_instances(image, found, class_names), out / "images" / f"{path.stem}.png")
        results += _coco_results(found, image_id, str(path))
    (out / "results.json").write_text(json.dumps(results))
    print(f"wrote {len(results)} detections to {out / 'results.json'} and pictures to {out / 'images'}")
    return 0


def _coco_results(found, image_id: int, file_name: str) -> list[dict]:
    import numpy as np
    from pycocotools import mask as mask_utils

    rows = []
    for box, label, score, mask in zip(found.boxes.tolist(), found.labels.tolist(), found.scores.tolist(), found.masks.numpy()):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        x1, y1, x2, y2 = box
        rows.append({"image_id": image_id, "file_name": file_name, "category_id": int(label),
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score), "segmentation": rle})
    return rows


def cmd_validate(args) -> int:
    from .data import load_dataset_spec, validate_dataset

    dataset = load_dataset_spec(args.data, allow_empty=True)
    problems = validate_dataset(dataset)
    for problem in problems:
        print(problem)
    print(f"{len(dataset)} images checked, {len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_export(args) -> int:
    from .export import to_onnx

    model = load_weights(args.weights)
    kwargs = {"opset": args.opset} if args.opset else {}
    to_onnx(model, args.out, **kwargs)
    print(f"wrote {args.out}")
    return 0


def cmd_convert(args) -> int:
    import maskrcnn

    model = load_weights(args.source)
    if args.class_names:
        names = [line.strip() for line in Path(args.class_names).read_text().splitlines() if line.strip()]
        if len(names) == model.config.num_classes - 1:
            names = ["BG"] + names
        if len(names) != model.config.num_classes:
            raise ValueError(f"{args.class_names}: {len(names)} names, but the weights have {model.config.num_classes} classes (background included)")
        model.class_names = names
    maskrcnn.save(model, args.target)
    print(f"wrote {args.target} ({model.config.num_classes} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `maskrcnn` command: thin subcommands that parse arguments and call library functions.

Errors from the user's data, files or settings are printed as one clear message (no traceback unless
--debug) and the command exits with status 2. Warnings (skipped annotations, no detections, ...) are printed
as one line each, "maskrcnn COMMAND: warning: ...".
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

PICTURE_SCORE_THRESHOLD = 0.5  # what `maskrcnn predict` draws unless --score-threshold says otherwise (as the demo)

EXAMPLES = {
    "demo": "maskrcnn demo --out demo_out --seed 0",
    "train": "maskrcnn train --data coco:annotations.json:images --config config.yaml --out runs/exp1 --epochs 12\n"
             "  maskrcnn train --data coco:annotations.json:images --preset demo --set images_per_batch=4 --out runs/small --epochs 2\n"
             "  maskrcnn train --data coco:annotations.json:images --config config.yaml --out runs/exp1 --epochs 24 --resume",
    "evaluate": "maskrcnn evaluate --weights runs/exp1/model.pt --data coco:val.json:val_images --out metrics.json",
    "predict": "maskrcnn predict --weights runs/exp1/model.pt photos/ extra.jpg --out predictions --score-threshold 0.5",
    "validate": "maskrcnn validate --data coco:annotations.json:images",
    "export": "maskrcnn export --weights runs/exp1/model.pt --out model.onnx",
    "convert": "maskrcnn convert mask_rcnn_coco.h5 model.pt --class-names coco_names.txt",
}

DATA_HELP = ("data set as FORMAT:PATHS: coco:ANNOTATIONS.json[:IMAGE_DIR], via:REGIONS.json[:IMAGE_DIR], "
             "masks:IMAGE_DIR:MASK_DIR, shapes:COUNT[:SIZE[:SEED]]")
WEIGHTS_HELP = "a model .pt (from train or convert), a matterport .h5, a torchvision state dict .pth, or torchvision-coco"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskrcnn", description="Mask R-CNN instance segmentation: train, evaluate, predict, export.")
    parser.add_argument("--debug", action="store_true", help="show the full Python traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, details: str = "") -> argparse.ArgumentParser:
        description = f"{help_text}\n\n{details + chr(10) + chr(10) if details else ''}Example:\n  {EXAMPLES[name]}"
        p = sub.add_parser(name, help=help_text, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        # SUPPRESS: without it the subcommand's default (False) would overwrite `maskrcnn --debug CMD`.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full Python traceback on errors")
        return p

    demo = command("demo", "Train a small model from scratch on built-in synthetic shapes, evaluate it and draw its predictions (no data or weights needed).")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--seed", type=int, default=0, help="random seed for data and training (default: 0)")
    demo.add_argument("--steps", type=int, default=None, help="training steps of 8 images (default: the demo's fixed count, which reaches mask mAP@0.5 0.95; printed at the start)")

    train = command(
        "train", "Train Mask R-CNN on a data set; a checkpoint after every epoch, validation AP logged, resumable.",
        "Writes into --out: checkpoints/epoch_NNNN.pt (+ last.json), train_log.jsonl (losses per step, validation\n"
        "box/mask mAP@0.5 per epoch), loss.png and the final model.pt. Without --val-data a deterministic share\n"
        "(--val-fraction) of the images is held out for validation. An --out that already holds checkpoints is\n"
        "only used with --resume, so a finished run is never overwritten.")
    train.add_argument("--data", required=True, help=DATA_HELP)
    train.add_argument("--val-data", help="validation data set, same forms as --data (default: hold out --val-fraction of --data)")
    train.add_argument("--val-fraction", type=float, default=0.1, help="share of --data held out for validation when there is no --val-data; 0 turns validation off (default: 0.1)")
    train.add_argument("--config", help="config file (YAML or JSON); default: the --preset with the data set's classes")
    train.add_argument("--preset", choices=["torchvision", "matterport", "demo"], default=None, help="start from a preset instead of a config file (default: torchvision)")
    train.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field, value read as YAML (repeatable), e.g. --set images_per_batch=4")
    train.add_argument("--out", required=True, help="output folder: checkpoints, log, loss curve, final model.pt")
    train.add_argument("--weights", help=f"initial weights: {WEIGHTS_HELP}; layers whose shape differs (another class count) stay freshly initialised and are listed")
    train.add_argument("--layers", default="all", help="layers to train: heads, 3+, 4+, 5+, all, or a regular expression over parameter names (default: all)")
    train.add_argument("--epochs", type=int, default=12, help="train until this many epochs are complete (default: 12)")
    train.add_argument("--resume", action="store_true", help="go on from the last checkpoint in --out (same config needed)")
    train.add_argument("--seed", type=int, default=0, help="random seed for initialisation, order and augmentation (default: 0)")
    train.add_argument("--workers", type=int, default=0, help="data loading worker processes (default: 0, load in the main process)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Distributed training: run under torchrun (README "Training on several GPUs or machines"); distributed.py.
    train.add_argument("--sync-bn", action="store_true", help="under torchrun on GPUs: batch-norm statistics over the global batch (SyncBatchNorm), for configs that train batch norm")
    train.add_argument("--dist-timeout", type=float, default=600.0, help="under torchrun: seconds a process waits for a missing one before all stop (default: 600)")
    train.add_argument("--amp", action="store_true", help="mixed precision: float16 autocast + gradient scaling on CUDA, bfloat16 autocast on a CPU with AMX; off by default, refused on other CPUs")

    evaluate = command(
        "evaluate", "Evaluate a model with the COCO metrics (box and mask AP, AR) and print a table.",
        "Metrics are fractions in [0, 1]; the JSON holds {\"bbox\": {AP, AP50, ..., ARl, per_class}, \"segm\": {...}},\n"
        "with null where COCOeval has nothing to score (no ground truth of that size).")
    evaluate.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    evaluate.add_argument("--data", required=True, help=DATA_HELP)
    evaluate.add_argument("--out", default="metrics.json", help="write the metrics as JSON here (default: metrics.json)")
    evaluate.add_argument("--results", help="also write the COCO results JSON (detections) here")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")

    predict = command(
        "predict", "Run a model on images or folders; write a picture per image and one COCO-results JSON.",
        "Writes into --out: images/NAME.png (the image with its instances drawn), results.json (a COCO results\n"
        "list: image_id, category_id, bbox [x, y, w, h], score, segmentation as RLE) and images.json (the COCO\n"
        "'images' and 'categories' those ids refer to, so pycocotools can load the results).")
    predict.add_argument("inputs", nargs="+", help="image files or folders of images (searched recursively)")
    predict.add_argument("--weights", help=WEIGHTS_HELP)
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--score-threshold", type=float, default=None, help="keep detections scoring at least this, in [0, 1] (default: the model's config "
                         "for results.json, and 0.5 for the pictures: a low evaluation threshold such as 0.05 would clutter them)")
    predict.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch")
    predict.add_argument("--onnx", help="the .onnx file for --backend onnxruntime")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")

    validate = command(
        "validate", "Check a data set without training and list every problem found.",
        "Reads every annotation, image and mask; prints one line per problem (file, image id, annotation id,\n"
        "what is wrong) and exits with status 1 when there is any, 0 when the data set is clean.")
    validate.add_argument("--data", required=True, help=DATA_HELP)

    export = command("export", "Export a model to ONNX.")
    export.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--opset", type=int, default=None)

    convert = command("convert", "Convert weights (matterport .h5, torchvision) to this library's .pt format.")
    convert.add_argument("source", help="a matterport .h5 file, a torchvision state dict .pth, or torchvision-coco")
    convert.add_argument("target", help="the .pt file to write")
    convert.add_argument("--class-names", help="a text file with one class name per line (background first, or without it)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .cpu import flush_denormals
    from .errors import MaskRCNNError

    # Before any torch operation, so that every intra-op thread inherits it (cpu.py: denormal floats
    # made training from random weights up to 10x slower).
    flush_denormals()

    def show_warning(message, category, filename, lineno, file=None, line=None):
        # One line a warning: where in our code it was raised means nothing to the person running the command.
        print(f"maskrcnn {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = show_warning
            return {
                "demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                "validate": cmd_validate, "export": cmd_export, "convert": cmd_convert,
            }[args.command](args) or 0
    # User errors: our own types, impossible values, and files that are missing, unreadable or unwritable.
    except (MaskRCNNError, ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"maskrcnn {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"maskrcnn {args.command}: interrupted; completed checkpoints are kept", file=sys.stderr)
        return 130


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------- helpers
def load_weights(spec: str):
    """A MaskRCNN from a .pt file of ours, a matterport .h5, a torchvision state dict, or torchvision-coco."""
    import maskrcnn

    if spec == "torchvision-coco":
        return maskrcnn.interop.from_torchvision(spec)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {spec} does not exist" if not path.exists() else f"weights {spec} is not a file")
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
    """Apply --set FIELD=VALUE overrides (values parsed as YAML: numbers, lists, booleans), validated."""
    import yaml

    changes = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set {assignment!r}: expected FIELD=VALUE, e.g. --set images_per_batch=4")
        try:
            changes[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"--set {assignment!r}: the value is not readable: {error}") from None
    return config.replace(**changes) if changes else config


def _images_in(inputs: list[str]) -> list[Path]:
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{item} does not exist")
    if not found:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {', '.join(inputs)}")
    return found


class DatasetView:
    """Some images of a Dataset, renumbered 0..len-1; classes, masks and references come from the base.

    Used for the validation share held out of a training set; everything the trainer, the loader and the
    evaluators ask of a data set (`load_image`, `load_mask`, `image_info`, `class_names`, ...) is answered.
    """

    def __init__(self, base, indices):
        self.base = base
        self.indices = [int(i) for i in indices]
        self.image_info = [base.image_info[i] for i in self.indices]
        self.class_info = base.class_info
        self.class_names = base.class_names
        self.num_classes = base.num_classes
        self.load_problems = []

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[self.indices[index]]

    def load_image(self, index: int):
        return self.base.load_image(self.indices[index])

    def load_mask(self, index: int):
        return self.base.load_mask(self.indices[index])

    def load_target(self, index: int):
        return self.base.load_target(self.indices[index])

    def num_instances(self, index: int) -> int:
        return self.base.num_instances(self.indices[index])

    def image_reference(self, index: int) -> str:
        return self.base.image_reference(self.indices[index])

    def get_source_class_id(self, class_id: int, source: str):
        return self.base.get_source_class_id(class_id, source)


def holdout_split(dataset, fraction: float, seed: int = 0) -> tuple[DatasetView, DatasetView | None]:
    """(training view, validation view or None): `fraction` of the images, at least one, chosen by a fixed
    permutation of the image indices, so the same data set always gives the same split."""
    import numpy as np

    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {fraction}")
    count = len(dataset)
    held = min(count - 1, max(1, round(fraction * count))) if fraction > 0 else 0
    if held <= 0:
        return DatasetView(dataset, range(count)), None
    order = np.random.default_rng(seed).permutation(count)
    val, train = sorted(order[:held].tolist()), sorted(order[held:].tolist())
    return DatasetView(dataset, train), DatasetView(dataset, val)


def _build_config(args, dataset):
    import maskrcnn

    if args.config and args.preset:
        raise ValueError("give either --config or --preset, not both")
    if args.config:
        config = maskrcnn.Config.load(args.config)
    else:
        preset = {"torchvision": maskrcnn.Config.torchvision, "matterport": maskrcnn.Config.matterport,
                  "demo": maskrcnn.Config.demo}[args.preset or "torchvision"]
        config = preset(num_classes=dataset.num_classes)
    config = parse_overrides(config, args.set)
    if config.num_classes != dataset.num_classes:
        print(f"num_classes: the config says {config.num_classes}, the data set has {dataset.num_classes} "
              f"(background included); using {dataset.num_classes}")
        config = config.replace(num_classes=dataset.num_classes)
    return config


# ---------------------------------------------------------------------------------------------- commands
def cmd_demo(args) -> int:
    from .demo import run_demo

    metrics = run_demo(out_dir=args.out, seed=args.seed, steps=args.steps)
    print(f"box mAP@0.5  {metrics['box_map50']:.3f}")
    print(f"mask mAP@0.5 {metrics['mask_map50']:.3f}")
    print(f"trained {metrics['steps']} steps in {metrics['train_seconds']:.0f} s; total {metrics['total_seconds']:.0f} s")
    print(f"wrote {args.out}/metrics.json, {args.out}/loss.png, {args.out}/contact_sheet.png and {args.out}/predictions/")
    return 0


def cmd_train(args) -> int:
    import torch

    import maskrcnn
    from .checkpoint import CheckpointManager
    from .data import load_dataset_spec
    from .distributed import prepare_model, quiet_unless_main, setup
    from .train import Trainer

    context = setup(timeout=args.dist_timeout)  # one process unless torchrun started this one
    quiet_unless_main(context)  # rank 0 prints; the others' stdout goes nowhere (errors still reach stderr)
    if args.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {args.epochs}")
    if args.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {args.workers}")
    out = Path(args.out)
    existing = CheckpointManager(out / "checkpoints").list_checkpoints()
    if existing and not args.resume:
        raise ValueError(f"{out} already holds checkpoints of a run ({', '.join(p.name for p in existing)}); "
                         f"pass --resume to go on from the last one, or choose another --out")
    torch.manual_seed(args.seed)
    dataset = load_dataset_spec(args.data)
    if args.val_data:
        train_set, val_set = dataset, load_dataset_spec(args.val_data, allow_empty=True)
        if val_set.class_names != dataset.class_names:
            raise ValueError(f"--val-data has the classes {val_set.class_names[1:]}, --data has {dataset.class_names[1:]}")
    else:
        train_set, val_set = holdout_split(dataset, args.val_fraction)
    config = _build_config(args, dataset)
    model = prepare_model(maskrcnn.MaskRCNN(config, class_names=dataset.class_names), context, sync_bn=args.sync_bn)
    print(f"training on {len(train_set)} images, validating on {len(val_set) if val_set is not None else 0}; "
          f"{dataset.num_classes - 1} classes: {', '.join(dataset.class_names[1:])}")

    class ReportingTrainer(Trainer):
        """The library's Trainer, printing each epoch's checkpoint and validation score as the log records them."""

        def end_of_epoch(self) -> None:
            super().end_of_epoch()
            line = f"epoch {self.state.epoch}: checkpoint {self.checkpoints.latest()}"
            scores = [r for r in self.state.history if r.get("epoch") == self.state.epoch and "val_box_map50" in r]
            if scores:
                line += (f"; validation box mAP@0.5 {scores[-1]['val_box_map50']:.4f}, "
                         f"mask mAP@0.5 {scores[-1]['val_mask_map50']:.4f}")
            print(line, flush=True)

    trainer = ReportingTrainer(model, train_set, out_dir=out, val_dataset=val_set, seed=args.seed,
                               num_workers=args.workers, progress=not args.no_progress, distributed=context, amp=args.amp)
    resumed = args.resume and trainer.resume()
    if resumed:
        print(f"resumed from {trainer.checkpoints.latest()} (epoch {trainer.state.epoch}, step {trainer.state.step})")
    elif args.resume:
        print(f"no checkpoint in {trainer.checkpoints.directory}; starting from the beginning")
    if args.weights and not resumed:
        from .finetune import load_matching_weights

        skipped = load_matching_weights(model, load_weights(args.weights))
        if skipped:
            print(f"freshly initialised ({len(skipped)} tensors whose shape differs from {args.weights}): " + ", ".join(skipped))
    if trainer.state.epoch >= args.epochs:
        print(f"already trained for {trainer.state.epoch} epochs (--epochs {args.epochs}); nothing to do")
    state = trainer.train(args.epochs, layers=args.layers)
    final = maskrcnn.save(model, out / "model.pt") if context.is_main else out / "model.pt"
    print(f"trained {state.step} steps over {state.epoch} epochs; wrote {final}, {trainer.log_path} and {trainer.checkpoints.directory}/")
    return 0


def cmd_evaluate(args) -> int:
    from tqdm import tqdm

    from .data import load_dataset_spec
    from .evaluation import CocoEvaluator, format_table

    model = load_weights(args.weights)
    dataset = load_dataset_spec(args.data, allow_empty=True)
    if model.config.num_classes != dataset.num_classes:
        raise ValueError(f"{args.weights} predicts {model.config.num_classes - 1} classes but {args.data} has "
                         f"{dataset.num_classes - 1} ({', '.join(dataset.class_names[1:])})")
    if list(model.class_names) != list(dataset.class_names):
        warnings.warn(f"class names differ: the model has {list(model.class_names)[1:]}, the data set "
                      f"{dataset.class_names[1:]}; classes are matched by position", stacklevel=1)
    evaluator = CocoEvaluator(dataset)
    for i in tqdm(range(len(dataset)), desc="evaluate", disable=args.no_progress, dynamic_ncols=True):
        evaluator.add(i, model.predict([dataset.load_image(i)])[0])
    summary = evaluator.summarize()
    print(format_table(summary))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Strict JSON has no NaN: a metric with nothing to score is null.
    out.write_text(json.dumps(_nan_to_none(summary), indent=2))
    print(f"wrote {out}")
    if args.results:
        print(f"wrote {evaluator.write_results(args.results)}")
    return 0


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def cmd_predict(args) -> int:
    from tqdm import tqdm

    from .data import read_image
    from .errors import DataError
    from .visualize import draw_instances, save_image

    if args.score_threshold is not None and not 0.0 <= args.score_threshold <= 1.0:
        raise ValueError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    paths = _images_in(args.inputs)
    if args.backend == "onnxruntime":
        if not args.onnx:
            raise ValueError("--backend onnxruntime needs --onnx model.onnx")
        from .export import OnnxPredictor

        predictor = OnnxPredictor(args.onnx)
    else:
        if not args.weights:
            raise ValueError(f"--weights is required ({WEIGHTS_HELP})")
        predictor = load_weights(args.weights)
    class_names = list(predictor.class_names)
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    results, images, used_names, unreadable = [], [], set(), []
    for image_id, path in enumerate(tqdm(paths, desc="predict", disable=args.no_progress, dynamic_ncols=True), start=1):
        try:
            image = read_image(path)
        except DataError as error:
            warnings.warn(f"skipping {path}: {error}", stacklevel=1)
            unreadable.append(path)
            continue
        found = predictor.predict([image], score_threshold=args.score_threshold)[0]
        picture = _unique_name(path.stem, used_names)
        shown = args.score_threshold if args.score_threshold is not None else PICTURE_SCORE_THRESHOLD
        save_image(draw_instances(image, found, class_names, score_threshold=shown), out / "images" / f"{picture}.png")
        images.append({"id": image_id, "file_name": str(path), "height": int(image.shape[0]), "width": int(image.shape[1]),
                       "picture": f"images/{picture}.png"})
        results += _coco_results(found, image_id)
    categories = [{"id": i, "name": name} for i, name in enumerate(class_names) if i > 0]
    (out / "results.json").write_text(json.dumps(results))
    (out / "images.json").write_text(json.dumps({"images": images, "categories": categories}, indent=1))
    print(f"wrote {len(results)} detections on {len(images)} images to {out / 'results.json'}, pictures to {out / 'images'}")
    if unreadable:
        print(f"{len(unreadable)} image(s) could not be read: {', '.join(map(str, unreadable))}", file=sys.stderr)
        return 1
    return 0


def _unique_name(stem: str, used: set) -> str:
    """Two inputs with one stem (a/x.jpg, b/x.png) get x and x_2, so no picture overwrites another."""
    name, number = stem, 2
    while name in used:
        name, number = f"{stem}_{number}", number + 1
    used.add(name)
    return name


def _coco_results(found, image_id: int) -> list[dict]:
    """Detections of one image -> COCO result dicts: bbox [x, y, w, h], segmentation as compressed RLE."""
    import numpy as np
    from pycocotools import mask as mask_utils

    rows = []
    for box, label, score, mask in zip(found.boxes.tolist(), found.labels.tolist(), found.scores.tolist(), found.masks.numpy()):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        x1, y1, x2, y2 = box
        rows.append({"image_id": image_id, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "score": float(score), "segmentation": rle})
    return rows


def cmd_validate(args) -> int:
    from .data import load_dataset_spec, validate_dataset

    kind = args.data.partition(":")[0].lower()
    # Build the data set however many instances are bad: the point is to list them all, not to refuse.
    extra = {"max_skip_fraction": 1.0} if kind in ("coco", "via") else {}
    with warnings.catch_warnings():
        # The skips are listed below as problems; warnings here would print each of them twice.
        warnings.simplefilter("ignore")
        dataset = load_dataset_spec(args.data, allow_empty=True, **extra)
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

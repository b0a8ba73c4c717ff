"""The `maskrcnn` command: each subcommand parses its arguments and calls one library function (runs.py).

Errors from the user's data, files or settings are printed as one clear message (no traceback unless
--debug) and the command exits with status 2. Warnings (skipped annotations, no detections, ...) are printed
as one line each, "maskrcnn COMMAND: warning: ...".
"""
from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
import warnings

EXAMPLES = {
    "demo": "maskrcnn demo --out demo_out --seed 0",
    "train": "maskrcnn train --data coco:annotations.json:images --config config.yaml --out runs/exp1 --epochs 12\n"
             "  maskrcnn train --data coco:annotations.json:images --preset demo --set images_per_batch=4 --out runs/small --epochs 2\n"
             "  maskrcnn train --data coco:annotations.json --backbone-weights imagenet --out runs/exp2 --time-budget 3600\n"
             "  maskrcnn train --data coco:annotations.json:images --config config.yaml --out runs/exp1 --epochs 24 --resume",
    "evaluate": "maskrcnn evaluate --weights runs/exp1/model.pt --data coco:val.json:val_images --out metrics.json",
    "predict": "maskrcnn predict --weights runs/exp1/model.pt photos/ extra.jpg --out predictions --score-threshold 0.5",
    "validate": "maskrcnn validate --data coco:annotations.json:images\n"
                "  maskrcnn validate --data coco:annotations.json:images --preset matterport --set image_min_dim=1024",
    "export": "maskrcnn export --weights runs/exp1/model.pt --out model.onnx\n"
              "  maskrcnn export --weights runs/exp1/model.pt --out model.onnx --int8 --calibration-data train_images/",
    "convert": "maskrcnn convert mask_rcnn_coco.h5 model.pt --class-names coco_names.txt",
    "convert-data": "maskrcnn convert-data --data labelme:labels/ --out labels/coco.json",
    "config": "maskrcnn config --list",
    "serve": "maskrcnn serve --weights runs/exp1/model.pt --host 127.0.0.1 --port 8000 --workers 1",
}

DETAILS = {  # what --help says of a command between its summary and its example
    "train": "Writes into --out: checkpoints/epoch_NNNN.pt (+ last.json), train_log.jsonl (losses per step, validation\n"
             "box/mask mAP@0.5 per epoch), loss.png and the final model.pt. Without --val-data a deterministic share\n"
             "(--val-fraction) of the images is held out for validation. An --out that already holds checkpoints is\n"
             "only used with --resume, so a finished run is never overwritten. Training ends after --epochs, or\n"
             "earlier at --max-steps or --time-budget; a run stopped mid-epoch checkpoints there\n"
             "(epoch_NNNN_step_NNNNNNNN.pt) and --resume goes on from that step.",
    "evaluate": "Metrics are fractions in [0, 1]; the JSON holds {\"bbox\": {AP, AP50, ..., ARl, per_class}, \"segm\": {...}},\n"
                "with null where COCOeval has nothing to score (no ground truth of that size). With coco:FILE.json and\n"
                "no :IMAGE_DIR the images are read from the folder that holds FILE.json.",
    "predict": "Writes into --out: images/NAME.png (the image with its instances drawn), results.json (a COCO results\n"
               "list: image_id, category_id, bbox [x, y, w, h], score, segmentation as RLE) and images.json (the COCO\n"
               "'images' and 'categories' those ids refer to, so pycocotools can load the results).",
    "validate": "Reads every annotation, image and mask; prints one line per problem (file, image id, annotation id,\n"
                "what is wrong) and exits with status 1 when there is any, 0 when the data set is clean.\n"
                "Then compares the objects with the model config (--preset, --config or --weights; default: the\n"
                "torchvision preset, as for train): a table of object sizes after resizing against anchor_scales,\n"
                "the instances per image against detection_max_instances and the training ROI sample, and a\n"
                "suggestion (--set FIELD=VALUE, as train takes it) for each misfit. This advice never fails the check.",
    "config": "Any field can be changed for a run with `maskrcnn train --set FIELD=VALUE` or in a --config file.",
}

DATA_HELP = ("data set as FORMAT:PATHS: coco:ANNOTATIONS.json[:IMAGE_DIR], via:REGIONS.json[:IMAGE_DIR], "
             "masks:IMAGE_DIR:MASK_DIR, shapes:COUNT[:SIZE[:SEED]], labelme:DIR, cvat:ANNOTATIONS.xml[:IMAGE_DIR], "
             "labelstudio:EXPORT.json[:IMAGE_DIR], yolo:DATA.yaml[:SPLIT]; without IMAGE_DIR the images are read from "
             "the JSON file's folder")
WEIGHTS_HELP = "a model .pt (from train or convert), a matterport .h5, a torchvision state dict .pth, or torchvision-coco"
# backends.CHOICES and backends.PRECISIONS, written out so that building the parser (and --help) imports no torch.
BACKEND_CHOICES = ["torch", "onnxruntime", "openvino", "auto"]
ONNX_HELP = ("the .onnx file (maskrcnn export) for --backend onnxruntime, openvino or auto; for openvino also the int8 "
             "model.int8.xml that maskrcnn export --int8 writes")
BACKEND_HELP = ("torch (default), onnxruntime or openvino (these two run --onnx), or auto: the fastest of them that gives "
                "PyTorch's detections on this machine, measured once per machine and model and cached (backends.py)")
PRECISION_CHOICES = ["f32", "bf16"]
PRECISION_HELP = ("f32 (default) or bf16: convolutions and matrix products in bfloat16, for --backend torch or openvino on "
                  "CPUs with bfloat16 instructions (AVX-512 BF16 or AMX); faster there, slightly less accurate (the "
                  "README's Precision on the CPU)")
SKIP_HELP = ("largest share of the annotations that may be skipped as unusable before the data set is refused "
             "(default: 0.05)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskrcnn", description="Mask R-CNN instance segmentation: train, evaluate, predict, export.")
    parser.add_argument("--debug", action="store_true", help="show the full Python traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        details = DETAILS.get(name, "")
        description = f"{help_text}\n\n{details + chr(10) + chr(10) if details else ''}Example:\n  {EXAMPLES[name]}"
        p = sub.add_parser(name, help=help_text, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        # SUPPRESS: without it the subcommand's default (False) would overwrite `maskrcnn --debug CMD`.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full Python traceback on errors")
        return p

    demo = command("demo", "Train a small model from scratch on built-in synthetic shapes, evaluate it and draw its predictions (no data or weights needed).")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--seed", type=int, default=0, help="random seed for data and training (default: 0)")
    demo.add_argument("--steps", type=int, default=None, help="training steps of 8 images (default: the demo's fixed count, which reaches mask mAP@0.5 0.95; printed at the start)")

    train = command("train", "Train Mask R-CNN on a data set; checkpoints, validation AP logged, resumable.")
    train.add_argument("--data", required=True, help=DATA_HELP)
    train.add_argument("--val-data", "--val", help="validation data set, same forms as --data (default: hold out --val-fraction of --data)")
    train.add_argument("--val-fraction", type=float, default=0.1, help="share of --data held out for validation when there is no --val-data; 0 turns validation off (default: 0.1)")
    train.add_argument("--config", help="config file (YAML or JSON); default: the --preset with the data set's classes")
    train.add_argument("--preset", choices=["torchvision", "torchvision_v2", "matterport", "demo"], default=None, help="start from a preset instead of a config file (default: torchvision)")
    train.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field, value read as YAML (repeatable), e.g. --set images_per_batch=4; `maskrcnn config --list` lists the fields")
    train.add_argument("--out", required=True, help="output folder: checkpoints, log, loss curve, final model.pt")
    train.add_argument("--weights", help=f"initial weights: {WEIGHTS_HELP}; layers whose shape differs (another class count) stay freshly initialised and are listed")
    train.add_argument("--backbone-weights", metavar="imagenet|FILE.pth", help="start the ResNet trunk from torchvision's ImageNet weights (downloaded into torch's hub cache) or a torchvision ResNet state dict file")
    train.add_argument("--layers", default="all", help="layers to train: heads, 3+, 4+, 5+, all, or a regular expression over parameter names (default: all)")
    train.add_argument("--epochs", type=int, default=12, help="train until this many epochs are complete (default: 12)")
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps in all (a resumed run counts its earlier steps)")
    train.add_argument("--time-budget", type=float, default=None, metavar="SECONDS", help="stop after the step during which this many seconds of training have passed")
    train.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS", help="a checkpoint every this many steps and at the end (default: one per epoch)")
    train.add_argument("--resume", action="store_true", help="go on from the last checkpoint in --out (same config needed)")
    train.add_argument("--seed", type=int, default=0, help="random seed for initialisation, order and augmentation (default: 0)")
    train.add_argument("--workers", type=int, default=0, help="data loading worker processes (default: 0, load in the main process)")
    train.add_argument("--max-skip-fraction", type=float, default=None, help=SKIP_HELP)
    train.add_argument("--max-unreadable-fraction", type=float, default=0.05, help="largest share of the images that may be unreadable (skipped with a warning) before training stops with their list (default: 0.05)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--eval-every", type=int, default=None, metavar="STEPS", help="validate every this many steps (default: after each epoch): the five losses and COCO box and mask AP, logged as val_* in train_log.jsonl")
    train.add_argument("--best-metric", default="segm_AP", help="validation metric that chooses best.pt: segm_AP, bbox_AP, segm_AP50, ..., or a loss (loss, mrcnn_mask, ...; lower is better) (default: segm_AP)")
    train.add_argument("--patience", type=int, default=None, metavar="N", help="stop when --best-metric has not improved for N evaluations (default: never)")
    train.add_argument("--keep", type=int, default=3, metavar="N", help="keep the newest N epoch checkpoints (default: 3)")
    train.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard event files in --out (written when the tensorboard package is installed: pip install 'maskrcnn[tensorboard]')")
    # Distributed training: run under torchrun (README "Training on several GPUs or machines"); distributed.py.
    train.add_argument("--sync-bn", action="store_true", help="under torchrun on GPUs: batch-norm statistics over the global batch (SyncBatchNorm), for configs that train batch norm")
    train.add_argument("--dist-timeout", type=float, default=600.0, help="under torchrun: seconds a process waits for a missing one before all stop (default: 600)")
    train.add_argument("--crop", type=int, default=None, metavar="SIZE", help="train on random SIZE x SIZE crops holding objects "
                       "(a share empty, as negatives), for images larger than the tiles they will be predicted in")
    train.add_argument("--keep-classes", action="store_true", help="with --weights whose classes include the data set's (e.g. "
                       "torchvision-coco for cats and dogs): keep those classes' rows of the class, box and mask outputs, "
                       "matched by name (or category id), instead of starting them fresh")
    train.add_argument("--amp", action="store_true", help="mixed precision: float16 autocast + gradient scaling on CUDA, bfloat16 autocast on a CPU with AMX; off by default, refused on other CPUs")
    train.add_argument("--no-augment", action="store_true", help="no augmentation: by default training flips images left-right (p 0.5) and, for configs that resize, draws each image's shorter side from image_min_dim_choices (0.8 to 1 x image_min_dim)")

    evaluate = command("evaluate", "Evaluate a model with the COCO metrics (box and mask AP, AR) and print a table.")
    evaluate.usage = ("maskrcnn evaluate (--weights WEIGHTS | --onnx FILE.onnx --backend onnxruntime|openvino) --data SPEC "
                      "[--out FILE] [--results FILE] [--report DIR] [options]")
    evaluate.add_argument("--weights", help=f"{WEIGHTS_HELP} (required unless --backend onnxruntime or openvino)")
    evaluate.add_argument("--backend", choices=BACKEND_CHOICES, default="torch", help=BACKEND_HELP)
    evaluate.add_argument("--onnx", help=ONNX_HELP)
    evaluate.add_argument("--precision", choices=PRECISION_CHOICES, default="f32", help=PRECISION_HELP)
    evaluate.add_argument("--data", required=True, help=DATA_HELP)
    evaluate.add_argument("--out", default="metrics.json", help="write the metrics as JSON here (default: metrics.json)")
    evaluate.add_argument("--results", help="also write the COCO results JSON (detections) here")
    evaluate.add_argument("--report", metavar="DIR", help="also write DIR/report.html (one page: AP tables, per-class AP, precision/recall/F1, confusion matrix, precision-recall curves, the images with the most errors) and DIR/report.json")
    evaluate.add_argument("--score-threshold", type=float, default=0.0, help="detections counted, for the AP and the report (default: 0, every detection up to 100 an image, the COCO standard)")
    evaluate.add_argument("--iou", type=float, default=0.5, help="IoU (of masks) at which the report's precision, recall, F1 and confusion matrix count a detection as its object's (default: 0.5)")
    evaluate.add_argument("--max-skip-fraction", type=float, default=None, help=SKIP_HELP)
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")

    predict = command("predict", "Run a model on images or folders; write a picture per image and one COCO-results JSON.")
    predict.add_argument("inputs", nargs="+", help="image files or folders of images (searched recursively)")
    predict.add_argument("--weights", help=f"{WEIGHTS_HELP} (required unless --backend onnxruntime or openvino)")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--score-threshold", type=float, default=None, help="keep detections scoring at least this, in [0, 1] (default: the model's config "
                         "for results.json, and 0.5 for the pictures: a low evaluation threshold such as 0.05 would clutter them)")
    predict.add_argument("--backend", choices=BACKEND_CHOICES, default="torch", help=BACKEND_HELP)
    predict.add_argument("--onnx", help=ONNX_HELP)
    predict.add_argument("--precision", choices=PRECISION_CHOICES, default="f32", help=PRECISION_HELP)
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.add_argument("--workers", type=int, default=2, help="threads that decode the next images and write the pictures "
                         "while the model runs (default: 2; 0: one step after another)")
    predict.add_argument("--tile", type=int, default=None, metavar="SIZE", help="predict large images in SIZE x SIZE tiles, merged so that "
                         "each object appears once; masks are kept per object box, and the image size guard is lifted")
    predict.add_argument("--overlap", type=int, default=128, metavar="PX", help="with --tile: overlap of neighbouring tiles; at least the "
                         "largest object's size lets each object be taken whole from one tile (default: 128)")
    predict.add_argument("--batch-size", type=int, default=1, metavar="N", help="with --tile: tiles predicted together (default: 1)")
    predict.add_argument("--max-detections", type=int, default=None, metavar="N", help="keep at most N detections per image, by score "
                         "(default: all the model gives; with --tile, no cap over the whole image)")
    predict.add_argument("--format", choices=("coco", "labelme", "cvat", "yolo", "geojson"), default=None, help="also write the "
                         "detections as that tool's files in OUT/FORMAT (masks traced as polygons; needs scikit-image), to "
                         "correct them there and train on the result; geojson: OUT/geojson/NAME.geojson per image, in a "
                         "GeoTIFF's map coordinates and CRS (needs rasterio: pip install 'maskrcnn[geo]'), else in pixels")

    validate = command("validate", "Check a data set without training and list every problem found.")
    validate.add_argument("--data", required=True, help=DATA_HELP)
    validate.add_argument("--config", help="compare the objects with this config file (YAML or JSON)")
    validate.add_argument("--preset", choices=["torchvision", "torchvision_v2", "matterport", "demo"], default=None,
                          help="compare the objects with this preset, as train would build it (default: torchvision)")
    validate.add_argument("--weights", help=f"compare the objects with the config of these weights: {WEIGHTS_HELP}")
    validate.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field "
                          "before the comparison, as for train (repeatable), e.g. --set anchor_scales=[16,32,64,128,256]")

    export = command("export", "Export a model to ONNX, and with --int8 also to an int8 OpenVINO model.")
    export.add_argument("--weights", required=True, help=WEIGHTS_HELP)
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--opset", type=int, default=None)
    export.add_argument("--int8", action="store_true", help="also write OUT's int8 OpenVINO IR beside it (model.onnx -> "
                        "model.int8.xml and .bin), quantised with NNCF on --calibration-data; run it with --backend "
                        "openvino --onnx model.int8.xml (needs: pip install 'maskrcnn[int8]')")
    export.add_argument("--calibration-data", metavar="SPEC_OR_DIR", help="with --int8: images like those the model will "
                        "see, a folder of images or a data set spec (FORMAT:PATHS, as --data; labels are not used)")
    export.add_argument("--calibration-images", type=int, default=None, metavar="N", help="with --int8: calibrate on N "
                        "images spread over --calibration-data (default: 300, or all when fewer)")

    convert = command("convert", "Convert weights (matterport .h5, torchvision) to this library's .pt format.")
    convert.add_argument("source", help="a matterport .h5 file, a torchvision state dict .pth, or torchvision-coco")
    convert.add_argument("target", help="the .pt file to write")
    convert.add_argument("--class-names", help="a text file with one class name per line (background first, or without it)")

    serve = command("serve", "Serve a model over HTTP (POST /predict, GET /health, GET /model) with a page to try it at GET /.")
    serve.add_argument("--weights", help=f"{WEIGHTS_HELP}, or a .onnx file with --backend onnxruntime or openvino")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--backend", choices=BACKEND_CHOICES, default="torch", help=BACKEND_HELP)
    serve.add_argument("--onnx", help=ONNX_HELP)
    serve.add_argument("--precision", choices=PRECISION_CHOICES, default="f32", help=PRECISION_HELP)
    serve.add_argument("--max-pixels", type=int, default=40_000_000, help="refuse larger images with 413 (default: 40000000)")
    serve.add_argument("--workers", type=int, default=1, help="model workers; the CPU's cores are divided among them and "
                       "requests queue for a free one (default: 1)")

    convert_data = command("convert-data", "Write any readable data set as one COCO instances file (names relative to its image folder).")
    convert_data.add_argument("--data", required=True, help=DATA_HELP)
    convert_data.add_argument("--out", required=True, help="the COCO .json file to write")

    config = command("config", "Describe the config: every field, its type, its value in each preset and what it means.")
    config.add_argument("--list", action="store_true", help="list every config field (what the command does with or without it)")
    return parser


INFERENCE_COMMANDS = ("predict", "evaluate", "serve")  # commands that run the model image after image


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .cpu import flush_denormals, reuse_freed_memory
    from .errors import MaskRCNNError

    # Before any torch operation, so that every intra-op thread inherits it (cpu.py: denormal floats
    # made training from random weights up to 10x slower).
    flush_denormals()
    if args.command in INFERENCE_COMMANDS:
        reuse_freed_memory()  # image after image the same feature maps: kept, not faulted in again (cpu.py)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        # One line a warning: where in our code it was raised means nothing to the person running the command.
        print(f"maskrcnn {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = show_warning
            return {
                "demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                "validate": cmd_validate, "export": cmd_export, "convert": cmd_convert, "convert-data": cmd_convert_data, "config": cmd_config,
                "serve": cmd_serve,
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


def run() -> None:
    """The `maskrcnn` command: `main`, then the process leaves without running libtorch's C++ static
    destructors, once every file is closed and every thread of ours has ended. Those destructors take about
    a second and page in some 120 MB of the library at exit (measured with torch and torchvision imported);
    the interpreter's own exit handlers (multiprocessing children, logging) still run first. A command that
    left a thread running exits the ordinary way, which waits for it."""
    code = main()
    others = [thread for thread in threading.enumerate() if thread is not threading.main_thread()]
    if any(not thread.daemon for thread in others):
        sys.exit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return " ".join(text.split())


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
    from .runs import TrainOptions, train

    options = TrainOptions(
        val_data=args.val_data, val_fraction=args.val_fraction, config_file=args.config, preset=args.preset,
        overrides=tuple(args.set), weights=args.weights, backbone_weights=args.backbone_weights, layers=args.layers,
        epochs=args.epochs, max_steps=args.max_steps, time_budget=args.time_budget,
        checkpoint_every=args.checkpoint_every, resume=args.resume, seed=args.seed, workers=args.workers,
        progress=not args.no_progress, sync_bn=args.sync_bn, dist_timeout=args.dist_timeout, amp=args.amp,
        max_skip_fraction=args.max_skip_fraction, max_unreadable_fraction=args.max_unreadable_fraction, crop=args.crop,
        augment=not args.no_augment, eval_every=args.eval_every, best_metric=args.best_metric, patience=args.patience,
        keep=args.keep, tensorboard=not args.no_tensorboard, keep_classes=args.keep_classes)
    train(args.data, args.out, options, report=lambda line: print(line, flush=True))
    return 0


def cmd_evaluate(args) -> int:
    from .errors import ConfigError
    from .runs import evaluate

    if not args.weights and not args.onnx:
        raise ConfigError("maskrcnn evaluate needs the model: --weights W (or --onnx FILE.onnx with --backend onnxruntime or openvino)")
    evaluate(args.weights, args.data, out=args.out, results=args.results, progress=not args.no_progress,
             max_skip_fraction=args.max_skip_fraction, backend=args.backend, onnx=args.onnx, precision=args.precision,
             report_dir=args.report, score_threshold=args.score_threshold, iou_threshold=args.iou)
    return 0


def cmd_predict(args) -> int:
    from .runs import predict

    unreadable = predict(args.inputs, weights=args.weights, backend=args.backend, onnx=args.onnx, out=args.out,
                         precision=args.precision, score_threshold=args.score_threshold, progress=not args.no_progress,
                         tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
                         max_detections=args.max_detections, label_format=args.format, workers=args.workers)
    if unreadable:
        print(f"{len(unreadable)} image(s) could not be read: {', '.join(map(str, unreadable))}", file=sys.stderr)
        return 1
    return 0


def cmd_validate(args) -> int:
    from .runs import validate

    problems = validate(args.data, config_file=args.config, preset=args.preset, weights=args.weights,
                        overrides=tuple(args.set))
    return 1 if any(problem.fatal for problem in problems) else 0  # warnings and the fit report alone do not fail


def cmd_export(args) -> int:
    from .errors import ConfigError
    from .runs import export

    if args.int8 != (args.calibration_data is not None):
        raise ConfigError("--int8 and --calibration-data go together: the int8 model is calibrated on those images")
    if args.calibration_images is not None and not args.int8:
        raise ConfigError("--calibration-images is for --int8 (with --calibration-data)")
    export(args.weights, args.out, opset=args.opset, calibration_data=args.calibration_data,
           calibration_images=args.calibration_images)
    return 0


def cmd_convert(args) -> int:
    from .runs import convert

    convert(args.source, args.target, class_names_file=args.class_names)
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    serve(args.weights, host=args.host, port=args.port, backend=args.backend, onnx=args.onnx, max_pixels=args.max_pixels,
          workers=args.workers, precision=args.precision, report=lambda line: print(line, flush=True))
    return 0


def cmd_convert_data(args) -> int:
    from .data import load_dataset_spec
    from .data.convert import write_coco

    counts = write_coco(load_dataset_spec(args.data, allow_empty=True), args.out)
    print(f"wrote {args.out}: {counts['images']} images, {counts['annotations']} annotations, "
          f"{counts['categories']} categories")
    return 0


def cmd_config(args) -> int:
    from .config_help import format_field_help

    print(format_field_help())
    return 0


if __name__ == "__main__":
    run()

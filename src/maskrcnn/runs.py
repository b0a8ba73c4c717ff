"""What each `maskrcnn` command does, as one library function each: train, evaluate, predict, validate, convert.

The command line (cli.py) only parses arguments and calls these; a script can call them the same way.
Lines for the person running them go to `report` (print by default; in distributed training rank 0's only).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import categories
from .config import Config
from .data.images import IMAGE_SUFFIXES, image_files_in
from .errors import ConfigError, DataError

PICTURE_SCORE_THRESHOLD = 0.5  # what `predict` draws unless a score threshold is given (as the demo)
PRESETS = {"torchvision": Config.torchvision, "torchvision_v2": Config.torchvision_v2, "matterport": Config.matterport,
           "demo": Config.demo}


# ---------------------------------------------------------------------------------------------- config
def apply_overrides(config: Config, assignments) -> Config:
    """Apply FIELD=VALUE overrides (values read as YAML: numbers, lists, booleans) through Config.replace."""
    import yaml

    changes = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set {assignment!r}: expected FIELD=VALUE, e.g. --set images_per_batch=4")
        try:
            changes[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {assignment!r}: the value is not readable: {error}") from None
    return config.replace(**changes) if changes else config


def training_config(dataset, *, config_file=None, preset=None, overrides=()) -> Config:
    """The config for training on `dataset`: a config file, or a preset with the data set's class count,
    then the overrides.

    A num_classes that differs from the data set's is a ConfigError: a model's class layers have one output
    per class, so training it on another class list would silently mislabel every instance.
    """
    if config_file and preset:
        raise ConfigError("give either a config file (--config) or a preset (--preset), not both")
    if config_file:
        config = Config.load(config_file)
    else:
        config = PRESETS[preset or "torchvision"](num_classes=dataset.num_classes)
    config = apply_overrides(config, overrides)
    if config.num_classes != dataset.num_classes:
        raise ConfigError(
            f"num_classes: the config says {config.num_classes}, the data set has {dataset.num_classes} "
            f"(background included: {', '.join(dataset.class_names)}); set num_classes: {dataset.num_classes} in "
            f"{config_file or 'the config'} or pass --set num_classes={dataset.num_classes}")
    return config


# ---------------------------------------------------------------------------------------------- train
@dataclass
class TrainOptions:
    """Everything `train` takes besides the data and the output folder (the `maskrcnn train` flags)."""

    val_data: str | None = None  # a second data set spec for validation
    val_fraction: float = 0.1  # share of the data held out for validation when there is no val_data
    config_file: str | None = None
    preset: str | None = None
    overrides: tuple = ()  # FIELD=VALUE
    weights: str | None = None  # initial weights (load_weights); layers of another shape stay fresh
    backbone_weights: str | None = None  # "imagenet" or a torchvision ResNet state dict file (pretrained.py)
    layers: str = "all"
    epochs: int = 12
    max_steps: int | None = None
    time_budget: float | None = None  # seconds
    checkpoint_every: int | None = None  # steps; None: every epoch
    resume: bool = False
    seed: int = 0
    workers: int = 0
    progress: bool = True
    sync_bn: bool = False
    dist_timeout: float = 600.0
    amp: bool = False
    max_skip_fraction: float | None = None  # annotations a data set may skip (None: the reader's default)
    max_unreadable_fraction: float = 0.05  # images that may fail to load
    eval_every: int | None = None  # validate every this many steps (None: after each epoch)
    best_metric: str = "segm_AP"  # the validation metric best.pt is chosen by (validation.METRICS)
    patience: int | None = None  # stop when best_metric has not improved for this many evaluations
    keep: int = 3  # epoch checkpoints kept (the newest)
    tensorboard: bool = True  # TensorBoard event files in the run folder, when the tensorboard package is there
    augment: bool = True  # horizontal flips and, where the config resizes, a shorter side drawn per image
    crop: int | None = None  # train on random crops of this size around objects (data/crops.py), for large images
    keep_classes: bool = False  # with weights: copy the class rows of the heads for the classes they share (by name or id)


def train(data: str, out, options: TrainOptions = TrainOptions(), *, report=print):
    """Train on the data set spec `data`, writing checkpoints, log, loss curve and model.pt into `out`."""
    from . import data as data_module
    from .checkpoint import CheckpointManager
    from .distributed import prepare_model, quiet_unless_main, setup
    from .model import MaskRCNN
    from .saving import load_weights, save
    from .train import Trainer

    o = options
    context = setup(timeout=o.dist_timeout)  # one process unless torchrun started this one
    quiet_unless_main(context)  # rank 0 prints; the others' stdout goes nowhere (errors still reach stderr)
    if o.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {o.epochs}")
    if o.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {o.workers}")
    out = Path(out)
    existing = CheckpointManager(out / "checkpoints").list_checkpoints()
    if existing and not o.resume:
        raise ConfigError(f"{out} already holds checkpoints of a run ({', '.join(p.name for p in existing)}); "
                          f"pass --resume to go on from the last one, or choose another --out")
    torch.manual_seed(o.seed)
    extra = {} if o.max_skip_fraction is None else {"max_skip_fraction": o.max_skip_fraction}
    dataset = data_module.load_dataset_spec(data, **extra)
    if o.val_data:
        train_set, val_set = dataset, data_module.load_dataset_spec(o.val_data, allow_empty=True, **extra)
        if val_set.class_names != dataset.class_names:
            raise DataError(f"--val-data has the classes {val_set.class_names[1:]}, --data has {dataset.class_names[1:]}")
    else:
        train_set, val_set = data_module.holdout_split(dataset, o.val_fraction)
    config = training_config(dataset, config_file=o.config_file, preset=o.preset, overrides=o.overrides)
    config, transform, augmentation = training_augmentation(config, o.augment)
    if o.crop:
        from .data import Compose
        from .data.crops import RandomCrop

        transform = Compose([RandomCrop(o.crop)] + ([transform] if transform is not None else []))
        augmentation = f"random {o.crop} px crops around objects, then {augmentation}"
    model = MaskRCNN(config, class_names=dataset.class_names)
    categories.attach(model, categories.of_dataset(dataset))  # saved with the model: predict writes these ids
    model = prepare_model(model, context, sync_bn=o.sync_bn)
    report(f"training on {len(train_set)} images, validating on {len(val_set) if val_set is not None else 0}; "
           f"{dataset.num_classes - 1} classes: {', '.join(dataset.class_names[1:])}; augmentation: {augmentation}")
    trainer = Trainer(model, train_set, out_dir=out, val_dataset=val_set, seed=o.seed, num_workers=o.workers, transform=transform,
                      progress=o.progress, distributed=context, amp=o.amp, checkpoint_every=o.checkpoint_every,
                      max_unreadable_fraction=o.max_unreadable_fraction, report=report, eval_every=o.eval_every,
                      best_metric=o.best_metric, patience=o.patience, keep_checkpoints=o.keep,
                      tensorboard=o.tensorboard)
    trainer.checkpoints.extra["categories"] = categories.to_plain(model)  # checkpoints load with their ids too
    if trainer.tensorboard is not None and trainer.tensorboard.enabled:
        report(f"watch it with: {trainer.tensorboard.command}")
    resumed = o.resume and trainer.resume()
    if resumed:
        report(f"resumed from {trainer.checkpoints.latest()} (epoch {trainer.state.epoch}, step {trainer.state.step})")
    elif o.resume:
        report(f"no checkpoint in {trainer.checkpoints.directory}; starting from the beginning")
    if not resumed:
        _initial_weights(model, o, report, load_weights)
    if trainer.state.epoch >= o.epochs:
        report(f"already trained for {trainer.state.epoch} epochs (--epochs {o.epochs}); nothing to do")
    state = trainer.train(o.epochs, layers=o.layers, time_budget=o.time_budget, max_steps=o.max_steps)
    final = save(model, out / "model.pt") if context.is_main else out / "model.pt"
    report(f"trained {state.step} steps ({state.epoch} epochs complete); wrote {final}, {trainer.log_path} and "
           f"{trainer.checkpoints.directory}/")
    return state


def training_augmentation(config: Config, augment: bool = True):
    """(config, transform, description) of `maskrcnn train`'s augmentation: as torchvision's detection
    reference and detectron2 train, a horizontal flip with p 0.5 and, where the config resizes and sets no
    image_min_dim_choices, a shorter side drawn per image from default_min_dim_choices. augment False
    (--no-augment) adds neither; choices the config sets itself are kept either way."""
    from .data import HorizontalFlip, default_min_dim_choices

    if augment and not config.image_min_dim_choices and config.image_resize_mode != "none" and config.layout != "matterport":
        config = config.replace(image_min_dim_choices=default_min_dim_choices(config.image_min_dim))
    transform = HorizontalFlip(0.5) if augment else None
    parts = (["horizontal flip (p 0.5)"] if augment else []) + (
        [f"shorter side drawn per image from {list(config.image_min_dim_choices)}"] if config.image_min_dim_choices else [])
    return config, transform, ", ".join(parts) or "none (--no-augment)"


def _initial_weights(model, options: TrainOptions, report, load_weights) -> None:
    """--backbone-weights, then --weights (which overrides the trunk where its tensors fit)."""
    if options.backbone_weights:
        from .pretrained import load_backbone_weights

        count = load_backbone_weights(model, options.backbone_weights)
        report(f"backbone: {count} tensors from {options.backbone_weights}")
    if options.weights:
        from .finetune import load_matching_weights

        source = load_weights(options.weights)
        skipped = load_matching_weights(model, source)
        if options.keep_classes:
            from .keep_classes import keep_class_rows

            pairs = keep_class_rows(model, source)
            kept = [f"{model.class_names[new]} (was {source.class_names[old]})" for new, old in pairs.items() if new > 0]
            fresh = [name for label, name in enumerate(model.class_names) if label > 0 and label not in pairs]
            report(f"--keep-classes: class rows kept for {', '.join(kept) or 'no class'}"
                   + (f"; fresh for {', '.join(fresh)}" if fresh else ""))
        if skipped:
            report(f"freshly initialised ({len(skipped)} tensors whose shape differs from {options.weights}): "
                   + ", ".join(skipped))


# ---------------------------------------------------------------------------------------------- evaluate
def evaluate(weights: str | None, data: str, *, out, results=None, progress: bool = True,
             max_skip_fraction: float | None = None, report=print, backend: str = "torch", onnx=None,
             precision: str = "f32", report_dir=None, score_threshold: float = 0.0, iou_threshold: float = 0.5) -> dict:
    """COCO metrics of the model `weights` (or the `onnx` file, run by `backend` in `precision`: load_predictor) on
    the data set spec `data`; printed as a table and written to `out`. score_threshold: detections counted (0:
    every one, up to detection_max_instances an image, the COCO standard); report_dir: also write report.html and
    report.json there (report.py), with precision, recall, F1 and confusion at score_threshold and iou_threshold."""
    from .data import load_dataset_spec
    from .evaluation import evaluate_coco, format_table

    model = load_predictor(weights, backend=backend, onnx=onnx, precision=precision, report=report)
    extra = {} if max_skip_fraction is None else {"max_skip_fraction": max_skip_fraction}
    dataset = load_dataset_spec(data, allow_empty=True, **extra)
    model = categories.for_dataset(model, dataset, report=report)  # e.g. torchvision's 91 COCO slots, by category id
    if report_dir is None:
        summary = evaluate_coco(model, dataset, out=out, results=results, progress=progress, score_threshold=score_threshold)
    else:
        from .evaluation import nan_to_none
        from .files import atomic_write_json
        from .report import write_report

        written = write_report(model, dataset, report_dir, score_threshold=score_threshold, iou_threshold=iou_threshold,
                               progress=progress)
        summary = written.summary
        atomic_write_json(out, nan_to_none(summary), indent=2)
        if results is not None:
            written.evaluator.write_results(results)
    report(format_table(summary))
    report(f"wrote {out}" + (f" and {results}" if results else "") + (f"; report {report_dir}/report.html" if report_dir else ""))
    return summary


# ---------------------------------------------------------------------------------------------- predict
def images_in(inputs) -> list[Path]:
    """The image files among `inputs`: files as given, folders searched recursively (sorted)."""
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += image_files_in(path)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{item} does not exist")
    if not found:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {', '.join(map(str, inputs))}")
    return found


def load_predictor(weights=None, *, backend: str = "torch", onnx=None, precision: str = "f32", report=print):
    """A MaskRCNN from `weights` (saving.load_weights), an export.OnnxPredictor or export.OpenVinoPredictor of the
    `onnx` file, or with backend "auto" the fastest of them that agrees with PyTorch here (backends.choose);
    precision "bf16" for torch (bfloat16.Bfloat16Predictor) or openvino on CPUs with bfloat16 instructions."""
    from . import backends

    return backends.load(backend, weights=weights, onnx=onnx, precision=precision, report=report)[1]


def predict(inputs, *, weights=None, backend: str = "torch", onnx=None, precision: str = "f32", out,
            score_threshold: float | None = None, progress: bool = True, report=print, tile: int | None = None,
            overlap: int = 128, batch_size: int = 1, max_detections: int | None = None, label_format: str | None = None,
            workers: int = 2) -> list[Path]:
    """Run a model (`load_predictor`) on image files and folders; write into `out` a picture per image
    (images/NAME.png), results.json (COCO results with the model's category ids: its data set's own, categories.py)
    and images.json (their images and categories).
    Returns the images that could not be read (each also warned about).

    tile: predict each image in tile x tile windows `overlap` px apart, `batch_size` tiles at a time, merged
    (tiling.py); the image is read a window at a time and `read_image`'s size guard does not apply.
    max_detections: keep at most this many detections per image, by score (None: all).
    label_format: also write the detections as "coco", "labelme", "cvat" or "yolo" files into out/FORMAT/
    (formats.py), masks traced as polygons, for correcting in that tool; or "geojson": out/geojson/NAME.geojson,
    polygons in a GeoTIFF's map coordinates, else in pixels (geo.py).
    workers: threads that decode the next images, and one that writes the pictures, while the model runs
    (pipeline.py); 0: each step in turn. The images/s figure is reported at the end."""
    import time

    from .data import read_image
    from .pipeline import Background, prefetch
    from .evaluation import coco_results
    from .files import atomic_write_json
    from .compact_pictures import picture_compact
    from .large_images import open_image, picture_canvas
    from .tiling import check_tiling, predict_tiled
    from .visualize import draw_instances, save_image

    if score_threshold is not None and not 0.0 <= score_threshold <= 1.0:
        raise ConfigError(f"--score-threshold must be in [0, 1], got {score_threshold}")
    if tile is not None:
        check_tiling(tile, overlap, batch_size)
    if max_detections is not None and max_detections < 0:
        raise ConfigError(f"--max-detections must be 0 or more, got {max_detections}")
    paths = images_in(inputs)
    predictor = load_predictor(weights, backend=backend, onnx=onnx, precision=precision, report=report)
    class_names = list(predictor.class_names)
    category_ids = categories.id_of_label(predictor)  # results.json keeps the data set's own category ids
    out = Path(out)
    writer = None
    if label_format is not None:
        from .formats import make_writer

        writer = make_writer(label_format, out / label_format, predictor, images=paths)  # a labelling tool's files
    (out / "images").mkdir(parents=True, exist_ok=True)
    results, images, used_names, unreadable = [], [], set(), []
    shown = score_threshold if score_threshold is not None else PICTURE_SCORE_THRESHOLD
    started, pictures = time.perf_counter(), Background(workers)  # pictures are encoded and written behind the model
    reads = prefetch(paths, read_image if tile is None else open_image, workers=workers)  # the next images decode meanwhile
    for image_id, (path, reading) in enumerate(tqdm(reads, total=len(paths), desc="predict", disable=not progress,
                                                    dynamic_ncols=True), start=1):
        try:
            image = reading.result()
        except DataError as error:
            warnings.warn(f"skipping {error}", stacklevel=2)
            unreadable.append(path)
            continue
        picture = _unique_name(path.stem, used_names)
        if tile is None:
            height, width = image.shape[:2]
            found = predictor.predict([image], score_threshold=score_threshold)[0][:max_detections]
            drawn = draw_instances(image, found, class_names, score_threshold=shown)
        else:
            found = predict_tiled(lambda tiles: predictor.predict(tiles, score_threshold=score_threshold), image,
                                  tile=tile, overlap=overlap, batch_size=batch_size, max_detections=max_detections,
                                  progress=progress)
            height, width = image.height, image.width
            drawn = picture_compact(picture_canvas(image), found, class_names, score_threshold=shown)
        pictures.submit(save_image, drawn, out / "images" / f"{picture}.png")
        images.append({"id": image_id, "file_name": str(path), "height": int(height),
                       "width": int(width), "picture": f"images/{picture}.png"})
        results += coco_results(found, image_id, category_ids.__getitem__)
        if writer is not None:
            writer.add(path, picture, (height, width), found)
    if writer is not None:
        report(f"wrote {label_format} files to {writer.close()}")
    categories_written = [{"id": c.id, "name": c.name} for c in categories.of_model(predictor)]
    atomic_write_json(out / "results.json", results)
    atomic_write_json(out / "images.json", {"images": images, "categories": categories_written}, indent=1)
    pictures.close()
    seconds = time.perf_counter() - started
    report(f"wrote {len(results)} detections on {len(images)} images to {out / 'results.json'}, pictures to {out / 'images'} "
           f"({len(images) / seconds:.2f} images/s)")
    return unreadable


def _unique_name(stem: str, used: set) -> str:
    """Two inputs with one stem (a/x.jpg, b/x.png) get x and x_2, so no picture overwrites another."""
    name, number = stem, 2
    while name in used:
        name, number = f"{stem}_{number}", number + 1
    used.add(name)
    return name


# ---------------------------------------------------------------------------------------------- others
def validate(data: str, *, config_file=None, preset=None, weights=None, overrides=(), report=print) -> list:
    """Every problem of the data set spec `data`, one reported line each; the list of Problems. Then how the
    objects fit the model config (data/config_fit.py): a config file, a preset (default: torchvision, as for
    `train`) or the config saved with `weights`, then the FIELD=VALUE overrides. That report is advice: it adds
    no Problem."""
    from .data import load_dataset_spec, validate_dataset
    from .data.config_fit import ObjectCensus, fit_report

    kind = data.partition(":")[0].lower()
    # Build the data set however many instances are bad: the point is to list them all, not to refuse.
    extra = {"max_skip_fraction": 1.0} if kind in ("coco", "via", "labelme", "cvat", "labelstudio", "yolo") else {}
    # Fatal problems (an unknown category, an image without a size) are recorded and the reading goes on.
    extra["collect_errors"] = True
    with warnings.catch_warnings():
        # The skips are listed below as problems; warnings here would print each of them twice.
        warnings.simplefilter("ignore")
        dataset = load_dataset_spec(data, allow_empty=True, **extra)
    # Before the long read of every image, so that a bad --set or config file stops it at once.
    config, config_name = _config_to_fit(dataset, config_file=config_file, preset=preset, weights=weights,
                                         overrides=overrides)
    census = ObjectCensus()
    problems = validate_dataset(dataset, on_masks=census.add)
    for problem in problems:
        report(str(problem))
    for line in fit_report(census, config, config_name=config_name).lines():
        report(line)
    fatal = sum(1 for problem in problems if problem.fatal)
    report(f"{len(dataset)} images checked, {len(problems)} problem(s), {fatal} of them fatal (training refuses "
           f"the data set until they are fixed)" if fatal else f"{len(dataset)} images checked, {len(problems)} problem(s)")
    return problems


def _config_to_fit(dataset, *, config_file=None, preset=None, weights=None, overrides=()) -> tuple[Config, str]:
    """(config, its name in words) that `validate` compares the objects with. Unlike `training_config`, a class
    count other than the data set's is let through: it does not change how the objects fit."""
    given = [option for option, value in (("--config", config_file), ("--preset", preset), ("--weights", weights)) if value]
    if len(given) > 1:
        raise ConfigError(f"give one of --config, --preset and --weights to compare the data with, not {' and '.join(given)}")
    if weights:
        from .saving import load_weights

        config, name = load_weights(weights).config, f"the config of {weights}"
    elif config_file:
        config, name = Config.load(config_file), str(config_file)
    else:
        config, name = PRESETS[preset or "torchvision"](num_classes=dataset.num_classes), f"the {preset or 'torchvision'} preset"
    if overrides:
        config, name = apply_overrides(config, overrides), f"{name} with {', '.join(overrides)}"
    return config, name


def export(weights: str, out, *, opset: int | None = None, calibration_data: str | None = None,
           calibration_images: int | None = None, report=print):
    """The model `weights` as an ONNX file `out` (export.to_onnx); with `calibration_data` (a data set spec or
    image files and folders) also its int8 OpenVINO IR beside it (quantize.quantize_int8: model.int8.xml),
    calibrated on `calibration_images` of those images (default 300)."""
    from .export import to_onnx
    from .saving import load_weights

    calibration = None
    if calibration_data is not None:  # read the images' list first: a wrong path stops before the export
        from .quantize import DEFAULT_CALIBRATION_IMAGES, CalibrationImages, require_nncf

        require_nncf()
        calibration = CalibrationImages(calibration_data, calibration_images or DEFAULT_CALIBRATION_IMAGES)
    to_onnx(load_weights(weights), out, **({"opset": opset} if opset else {}))
    report(f"wrote {out}")
    if calibration is not None:
        from .quantize import quantize_int8

        quantize_int8(out, calibration, report=report)


def convert(source: str, target, *, class_names_file=None, report=print):
    """Weights (matterport .h5, torchvision) -> our .pt, with class names from a file (one a line)."""
    from .saving import load_weights, save

    model = load_weights(source)
    if class_names_file:
        names = [line.strip() for line in Path(class_names_file).read_text().splitlines() if line.strip()]
        if len(names) == model.config.num_classes - 1:
            names = ["BG"] + names
        if len(names) != model.config.num_classes:
            raise DataError(f"{class_names_file}: {len(names)} names, but the weights have {model.config.num_classes} "
                            f"classes (background included)")
        model.class_names = names
    save(model, target)
    report(f"wrote {target} ({model.config.num_classes} classes)")
    return model

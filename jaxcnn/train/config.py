"""The base training config (every experiment in configs/ starts from `default_config()` and
changes only what differs) and its validation, run at start-up before anything compiles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ml_collections

from jaxcnn.errors import ConfigError

# Sub-dicts whose keys are free-form (passed through to a model or a task).
FREE_FORM = ("model.kwargs", "task_kwargs", "init.extra", "optimizer.groups")


def default_config() -> ml_collections.ConfigDict:
    """All keys the trainer reads, with their defaults and types."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_epochs = 10.0  # a fraction trains ceil(num_epochs * steps_per_epoch) steps
    c.bf16 = False  # bf16 compute; params, optimizer state and BN statistics stay float32
    c.task = ""  # "" = the model's registered task (classification, segmentation, ...)
    c.task_kwargs = ml_collections.ConfigDict()
    c.label_smoothing = 0.0
    c.progress = True  # tqdm bar per epoch (stderr, when it is a terminal)
    c.log_every = 20  # steps between progress-bar updates (and NaN checks)
    c.debug_nans = False  # on a non-finite step, re-run it under checkify to find the source

    c.model = ml_collections.ConfigDict()
    c.model.name = "lenet5"
    c.model.kwargs = ml_collections.ConfigDict()  # extra create_model() fields

    c.data = ml_collections.ConfigDict()
    c.data.source = "digits"  # digits | npz | folder | tfds | voc
    c.data.name = ""  # tfds dataset name
    c.data.path = ""  # folder root or .npz file
    c.data.data_dir = ""  # tfds data_dir ("" = $TFDS_DATA_DIR or ~/tensorflow_datasets)
    c.data.manual_dir = ""  # tfds manual_dir (imagenet2012)
    c.data.download = False
    c.data.cache_dir = ""  # folder decode cache ("" = ~/.cache/jaxcnn/folders)
    c.data.train_split = "train"
    c.data.test_split = "test"
    # Checkpoint selection and plateau schedules use a validation split carved from train;
    # the test split is only reported. 0: validate on the test split (with a warning).
    c.data.valid_fraction = 0.1
    c.data.image_size = 0  # 0 = native size
    c.data.channels = 3
    c.data.strict = False  # unreadable images: error (True) or skip with a warning
    c.data.max_examples = 0  # 0 = all; cap the train split (smoke tests)
    c.data.batch_size = 128  # global batch, split over all devices
    c.data.eval_batch_size = 0  # 0 = batch_size
    c.data.on_device = "auto"  # auto | on | off: keep the train split in device memory
    c.data.mean = (0.0,)  # per-channel, on the [0, 255] pixel scale
    c.data.std = (255.0,)
    c.data.crop_padding = 0
    c.data.flip = False
    c.data.max_boxes = 0  # voc: boxes per image after padding (0 = the most in the data)
    c.data.class_names = ()  # voc: object classes in label order (() = names in the XML)
    c.data.cutout = 0
    c.data.padding_mode = "constant"  # crop padding: constant (zeros) | reflect (translation)
    c.data.flip_mode = "random"  # random | alternate (one random flip of the data, then all
    #                               images flipped in odd epochs: airbench's alternating flip)
    c.data.tta = 0  # test-time augmentation: 0 none | 1 mirror | 2 mirror + 1-pixel shifts
    # More on-device augmentation (jaxcnn.data.augment; 0 / False = off):
    c.data.crop_size = 0  # random crop of this side (AlexNet: 227 of 256), centre crop in eval
    c.data.vertical_flip = False
    c.data.resized_crop = 0  # random-resized crop to this side (Inception / torchvision)
    c.data.resized_crop_scale = (0.08, 1.0)  # its area fraction range
    c.data.rotation = 0.0  # degrees: uniform in [-rotation, rotation]
    c.data.brightness = 0.0  # colour jitter factors uniform in [1 - x, 1 + x]
    c.data.contrast = 0.0
    c.data.saturation = 0.0
    c.data.ten_crop = False  # test on AlexNet's ten crop_size patches (softmax averaged)
    # The host input pipeline (jaxcnn.data.stream: grain workers decode and augment), used by
    # streamed sources: data.source=records (`jaxcnn prepare`), tfds or folder with
    # on_device=off (or a folder too large to decode into memory). There crop_padding, flip
    # and resized_crop run on the host (RandomResizedCrop from the decoded image), the other
    # augmentations on the device; the output side is resized_crop or image_size.
    c.data.eval_resize = 0  # eval: Resize(shorter side) then CenterCrop(the output side)
    c.data.workers = -1  # decode processes per host (-1 auto, 0 = a plain loop in the trainer)
    c.data.jpeg_draft = True  # decode large JPEGs at 1/2-1/8 scale when the output is smaller

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"  # sgd | adam | adamw | rmsprop | adagrad
    c.optimizer.lr = 0.1  # peak learning rate
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.decay = 0.99  # rmsprop's squared-gradient average (torch alpha)
    c.optimizer.initial_accumulator = 0.0  # adagrad
    c.optimizer.weight_decay = 0.0
    c.optimizer.decoupled = False  # True: AdamW-style decay; False: L2 added to the gradient
    c.optimizer.decay_all = False  # False: no decay on biases and norm scales (ndim < 2)
    c.optimizer.clip_norm = 0.0  # > 0: clip by global norm
    c.optimizer.clip_value = 0.0  # > 0: clip each gradient entry
    # Parameter groups: {name: {pattern, lr_scale, weight_decay_scale, freeze_after_epochs}};
    # a leaf joins the first group whose regex `pattern` matches its path ("block1/norm1/bias").
    c.optimizer.groups = ml_collections.ConfigDict()

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "constant"  # constant | step | cosine | warmup_cosine | onecycle |
    #                                plateau | triangle
    c.schedule.start_factor = 0.0  # triangle: lr at step 0 = start_factor * lr
    c.schedule.warmup_epochs = 0.0
    c.schedule.milestones = (30, 60, 80)  # epochs (step decay)
    c.schedule.gamma = 0.1  # step decay factor
    c.schedule.end_factor = 0.0  # cosine: final lr = end_factor * lr
    c.schedule.pct_start = 0.25  # onecycle, triangle: fraction of the steps before the peak
    c.schedule.div_factor = 25.0  # onecycle: initial lr = lr / div_factor
    c.schedule.final_div_factor = 1e4  # onecycle
    c.schedule.factor = 0.1  # plateau
    c.schedule.patience = 5  # plateau, in epochs
    c.schedule.cooldown = 0  # plateau, in epochs
    c.schedule.rtol = 1e-4  # plateau
    # plateau: "valid_<metric>" (a validation metric, checked at each epoch end: torch's
    # ReduceLROnPlateau) or "train_loss" (the training loss averaged over each epoch of
    # steps, inside the optimizer: optax.contrib.reduce_on_plateau)
    c.schedule.plateau_metric = "valid_loss"
    c.schedule.plateau_mode = ""  # "" = min for losses and errors, max otherwise
    c.schedule.min_lr = 0.0  # plateau on a validation metric: the rate never goes below

    # Early stopping on a validation metric (jaxcnn.train.stopping): off while patience = 0.
    c.early_stopping = ml_collections.ConfigDict()
    c.early_stopping.metric = ""  # "" = the task's best metric (accuracy, iou, mae, ...)
    c.early_stopping.mode = ""  # "" = the task's mode for its metric, min for losses
    c.early_stopping.patience = 0  # epochs without improvement before stopping
    c.early_stopping.min_delta = 0.0  # smallest change that counts as an improvement

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 0  # 0: only at epoch ends
    c.checkpoint.keep = 3  # N latest
    c.checkpoint.keep_best = True  # also keep the best by validation accuracy
    c.checkpoint.async_save = True

    # Lookahead of the weights (jaxcnn.train.averaging): every `period` steps (0 = off) the
    # slow copy moves towards the weights with decay base * (step / total) ** power.
    c.lookahead = ml_collections.ConfigDict()
    c.lookahead.period = 0
    c.lookahead.base = 0.95**5
    c.lookahead.power = 3.0

    c.log = ml_collections.ConfigDict()
    c.log.tensorboard = False  # also write TensorBoard event files (tensorboardX) to workdir

    c.lr_find = ml_collections.ConfigDict()
    c.lr_find.start_lr = 1e-7
    c.lr_find.end_lr = 10.0
    c.lr_find.steps = 100

    c.init = ml_collections.ConfigDict()
    c.init.path = ""  # "" = random init; "torchvision:NAME", a workdir or a .msgpack file
    c.init.reinit_head = False  # keep everything but a head of another shape
    # Top-level modules (regexes, full match) to re-initialize even where the loaded shapes
    # fit: a new multi-layer head, e.g. ("classifier_[36]",) for VGG's last two FCs.
    c.init.reinit_layers = ()
    c.init.extra = ml_collections.ConfigDict()
    c.init.data_examples = 0  # > 0: a family's `init_from_data` (airbench's whitening) sees
    #                            this many normalized training images before training

    # Transfer learning (jaxcnn.train.transfer): which stages train, at which rates.
    c.transfer = ml_collections.ConfigDict()
    c.transfer.freeze = "full"  # full | linear_probe (head only) | finetune_last
    c.transfer.last_stages = 1  # finetune_last: how many stages before the head train
    c.transfer.lr_slice = ()  # (lo, hi): fast.ai discriminative rates, first stage -> head
    return c


def split_free_form_flags(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """`argv` without its `--config.<free-form group>.KEY=VALUE` flags (also `... KEY VALUE`),
    and those flags as (dotted key, raw value). ml_collections only overrides keys the config
    file defines, but FREE_FORM groups (model.kwargs, ...) take any key."""
    rest, pairs = [], []
    args = iter(argv)
    for arg in args:
        name, eq, raw = arg.partition("=")
        key = name.removeprefix("--config.")
        group = key.rpartition(".")[0]
        if not name.startswith("--config.") or group not in FREE_FORM:
            rest.append(arg)
            continue
        if not eq:
            raw = next(args, None)
            if raw is None:
                raise ConfigError(f"{name} needs a value: {name}=VALUE.")
        pairs.append((key, raw))
    return rest, pairs


def parse_flag_value(raw: str) -> Any:
    """A command-line value: a Python literal (16, 0.1, True, (2, 2)), "true"/"false"/"none"
    in any case, else the text itself (prelu, leaky_relu(negative_slope=0.2))."""
    import ast

    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False, "none": None}.get(raw.strip().lower(), raw)


def apply_free_form_flags(config: ml_collections.ConfigDict,
                          pairs: list[tuple[str, str]]) -> None:
    """Set each (dotted key, raw value) on `config`, the value read by `parse_flag_value`."""
    for key, raw in pairs:
        value = parse_flag_value(raw)
        *groups, leaf = key.split(".")
        with config.unlocked():
            node = config
            for g in groups:
                node = node[g]
            node[leaf] = value


def _types_match(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, tuple | list):
        return isinstance(value, tuple | list)
    return isinstance(value, type(default))


def validate_config(config: ml_collections.ConfigDict, prefix: str = "") -> None:
    """Raise ConfigError on unknown keys or values of the wrong type (compared with
    `default_config()`), naming the key and the expected type."""
    defaults = default_config()
    _validate(config, defaults, prefix)
    if config.num_epochs <= 0:
        raise ConfigError(f"num_epochs must be positive; got {config.num_epochs}.")
    if config.data.on_device not in ("auto", "on", "off"):
        raise ConfigError(f"data.on_device must be auto, on or off; got {config.data.on_device!r}.")
    if len(config.data.mean) != len(config.data.std):
        raise ConfigError(
            f"data.mean {tuple(config.data.mean)} and data.std {tuple(config.data.std)} need "
            "one value per channel each."
        )
    if any(not s > 0 for s in config.data.std):  # "not >" also catches NaN
        raise ConfigError(
            f"data.std {tuple(config.data.std)} must be positive (a zero std divides by zero "
            "and trains on inf/NaN); use the per-channel pixel std on the 0..255 scale."
        )
    if config.checkpoint.keep < 1:
        raise ConfigError(f"checkpoint.keep must be >= 1; got {config.checkpoint.keep}.")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1); got {config.label_smoothing}.")
    _check_ranges(config)
    _validate_speedrun_keys(config)
    _check_augment_and_eval(config)


def _check_augment_and_eval(config: ml_collections.ConfigDict) -> None:
    """ConfigError for augmentation and test-time options that cannot work together."""
    data = config.data
    if data.crop_size and data.resized_crop:
        raise ConfigError(
            f"data.crop_size={data.crop_size} and data.resized_crop={data.resized_crop} are two "
            "ways to pick the training crop; set one of them."
        )
    lo, hi = (tuple(data.resized_crop_scale) + (None, None))[:2]
    if len(data.resized_crop_scale) != 2 or not 0 < lo <= hi <= 1:
        raise ConfigError(f"data.resized_crop_scale must be (lo, hi) with 0 < lo <= hi <= 1; "
                          f"got {tuple(data.resized_crop_scale)}.")
    if data.ten_crop and not data.crop_size:
        raise ConfigError(
            "data.ten_crop tests on AlexNet's ten data.crop_size patches (corners, centre and "
            "their mirror images) of each test image: set data.crop_size (e.g. 227 with "
            "data.image_size=256)."
        )
    if data.ten_crop and data.tta:
        raise ConfigError(f"data.ten_crop and data.tta={data.tta} are two test-time "
                          "augmentations; choose one.")


# key -> (lowest allowed, highest allowed or None, what the value means); checked at start-up
# so that a bad value fails in one line before data loading and compilation.
_RANGES: dict[str, tuple[float, float | None, str]] = {
    "seed": (0, 2**31 - 2, "the random seed"),
    "log_every": (1, None, "steps between progress updates and NaN checks"),
    "data.image_size": (0, None, "pixels (0 = native size)"),
    "data.crop_padding": (0, None, "pixels of zero padding for random crops"),
    "data.cutout": (0, None, "the side of the cutout square in pixels (0 = off)"),
    "data.max_examples": (0, None, "training examples (0 = all)"),
    "data.eval_batch_size": (0, None, "examples per eval batch (0 = data.batch_size)"),
    "data.eval_resize": (0, None, "the shorter side before the centre crop (0 = image_size)"),
    "data.workers": (-1, 256, "input worker processes (-1 = auto, 0 = none)"),
    "optimizer.lr": (0.0, None, "the peak learning rate"),
    "optimizer.weight_decay": (0.0, None, "the decay coefficient"),
    "optimizer.clip_norm": (0.0, None, "the global gradient norm limit (0 = off)"),
    "optimizer.clip_value": (0.0, None, "the per-entry gradient limit (0 = off)"),
    "checkpoint.every_steps": (0, None, "steps between checkpoints (0 = epoch ends only)"),
    "lr_find.steps": (2, None, "learning-rate finder steps (a curve needs two points)"),
    "lr_find.start_lr": (1e-30, None, "the finder's first learning rate"),
    "data.crop_size": (0, None, "the side of the random training crop (0 = off)"),
    "data.resized_crop": (0, None, "the side of the random-resized crop (0 = off)"),
    "data.rotation": (0.0, 180.0, "the largest rotation in degrees"),
    "data.brightness": (0.0, None, "the brightness jitter"),
    "data.contrast": (0.0, None, "the contrast jitter"),
    "data.saturation": (0.0, None, "the saturation jitter"),
    "early_stopping.patience": (0, None, "epochs without improvement (0 = off)"),
    "early_stopping.min_delta": (0.0, None, "the smallest improvement"),
    "schedule.min_lr": (0.0, None, "the plateau schedule's lowest rate"),
}


def _check_ranges(config: ml_collections.ConfigDict) -> None:
    """ConfigError naming the key, its value and the allowed range, for every key of
    `_RANGES`, data.channels and the cutout against a fixed image size."""
    import math

    for key, (lo, hi, meaning) in _RANGES.items():
        value = config
        for part in key.split("."):
            value = value[part]
        if not (math.isfinite(value) and value >= lo and (hi is None or value <= hi)):
            allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"{key} must be {allowed} ({meaning}); got {value!r}.")
    if config.lr_find.end_lr <= config.lr_find.start_lr:
        raise ConfigError(f"lr_find.end_lr ({config.lr_find.end_lr}) must be larger than "
                          f"lr_find.start_lr ({config.lr_find.start_lr}).")
    if config.data.channels not in (1, 3):
        raise ConfigError(f"data.channels must be 1 (grayscale) or 3 (RGB); got "
                          f"{config.data.channels!r}.")
    if config.data.image_size:
        check_image_size(config, (config.data.image_size, config.data.image_size))
    _check_host_transforms(config.data)


def _check_host_transforms(data: ml_collections.ConfigDict) -> None:
    """ConfigError for host-pipeline settings that cannot work: an eval resize smaller than
    the centre crop (the output side: resized_crop or image_size)."""
    side = data.resized_crop or data.image_size
    if data.eval_resize and data.eval_resize < side:
        raise ConfigError(f"data.eval_resize={data.eval_resize} is smaller than the centre "
                          f"crop ({side}, data.resized_crop or data.image_size); use e.g. "
                          f"{round(side / 0.875)} (the 256/224 ratio).")


def check_image_size(config: ml_collections.ConfigDict, size: tuple[int, int]) -> None:
    """ConfigError if the augmentation does not fit images of `size` (H, W): a cutout
    larger than the image blanks it whole. Called again once the native size is known."""
    if config.data.cutout > min(size):
        raise ConfigError(
            f"data.cutout={config.data.cutout} is larger than the {size[0]}x{size[1]} images: "
            f"every training image would be blanked. Use at most {min(size)} (CIFAR recipes "
            "use 8-16 for 32x32)."
        )


GROUP_KEYS = {"pattern": str, "lr_scale": float, "weight_decay_scale": float,
              "freeze_after_epochs": float}


def _validate_speedrun_keys(config: ml_collections.ConfigDict) -> None:
    """Augmentation modes, test-time augmentation, lookahead and parameter groups."""
    from jaxcnn.data.augment import FLIP_MODES, PADDING_MODES, TTA_LEVELS

    data = config.data
    for key, allowed in (("padding_mode", PADDING_MODES), ("flip_mode", FLIP_MODES),
                         ("tta", TTA_LEVELS)):
        if data[key] not in allowed:
            raise ConfigError(f"data.{key} must be one of {allowed}; got {data[key]!r}.")
    if config.lookahead.period < 0:
        raise ConfigError(f"lookahead.period must be >= 0 (0 = off); got "
                          f"{config.lookahead.period}.")
    for name, group in config.optimizer.groups.items():
        if not isinstance(group, ml_collections.ConfigDict | dict) or "pattern" not in group:
            raise ConfigError(
                f"optimizer.groups.{name} must be a group of keys with a 'pattern' (a regex "
                f"over parameter paths such as 'block1/norm1/bias'); got {group!r}."
            )
        for key, value in group.items():
            kind = GROUP_KEYS.get(key)
            if kind is None:
                raise ConfigError(f"unknown key optimizer.groups.{name}.{key}; valid keys are "
                                  f"{sorted(GROUP_KEYS)}.")
            ok = isinstance(value, str) if kind is str else (
                isinstance(value, int | float) and not isinstance(value, bool) and value >= 0)
            if not ok:
                raise ConfigError(f"optimizer.groups.{name}.{key} must be "
                                  f"{'a regex string' if kind is str else 'a number >= 0'}; "
                                  f"got {value!r}.")


def _validate(config: Any, defaults: Any, path: str) -> None:
    for key in config.keys():
        full = f"{path}{key}"
        if full in FREE_FORM:
            continue
        if key not in defaults:
            import difflib

            close = difflib.get_close_matches(key, list(defaults.keys()), n=3)
            hint = f" Did you mean {', '.join(path + c for c in close)}?" if close else ""
            raise ConfigError(f"unknown config key {full!r}.{hint}")
        value, default = config[key], defaults[key]
        if isinstance(default, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict | dict):
                raise ConfigError(f"config key {full!r} must be a group of keys; got {value!r}.")
            _validate(value, default, full + ".")
        elif not _types_match(default, value):
            raise ConfigError(
                f"config key {full!r} must be {type(default).__name__} (default "
                f"{default!r}); got {type(value).__name__} {value!r}."
            )


def _config_dirs() -> list[Path]:
    """Where config names are looked up: the installed `jaxcnn.configs` package (the wheel
    ships configs/ there), then a source checkout's top-level configs/."""
    dirs = []
    try:
        import jaxcnn.configs as installed

        dirs.append(Path(installed.__file__).parent)
    except ImportError:
        pass
    checkout = Path(__file__).resolve().parents[2] / "configs"
    if (checkout / "__init__.py").is_file() and checkout not in dirs:
        dirs.append(checkout)
    return dirs


def list_configs() -> list[str]:
    """The names `load_config` accepts (digits_lenet, smoke, ...)."""
    return sorted({p.stem for d in _config_dirs() for p in d.glob("*.py")
                   if not p.stem.startswith("_")})


def _import_file(path: Path) -> Any:
    """Import a config file; a file inside a package folder (one with __init__.py) is
    imported as a module of that package, so its relative imports (`from . import
    default`) work."""
    import importlib
    import importlib.util
    import sys

    folder = path.parent
    if (folder / "__init__.py").is_file():
        known = {d.resolve(): n for d, n in ((Path(p), n) for n, p in _package_dirs())}
        package = known.get(folder.resolve())
        if package is None:
            package = f"_jaxcnn_configs_{abs(hash(str(folder.resolve())))}"
            if package not in sys.modules:
                spec = importlib.util.spec_from_file_location(
                    package, folder / "__init__.py", submodule_search_locations=[str(folder)])
                module = importlib.util.module_from_spec(spec)
                sys.modules[package] = module
                spec.loader.exec_module(module)
        return importlib.import_module(f"{package}.{path.stem}")
    spec = importlib.util.spec_from_file_location(f"_jaxcnn_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package_dirs() -> list[tuple[str, str]]:
    """(package name, folder) of the importable config packages."""
    import importlib.util

    out = []
    for name in ("jaxcnn.configs", "configs"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            out.extend((name, p) for p in spec.submodule_search_locations)
    return out


def load_config(spec: str) -> ml_collections.ConfigDict:
    """The ConfigDict of `spec`: a config name (`digits_lenet`, looked up in jaxcnn.configs,
    then a source checkout's configs/) or a path to a config file, with an optional
    `:variant` suffix passed to its `get_config(variant)` (as ml_collections' config flags
    do)."""
    name, sep, variant = spec.partition(":")
    path = Path(name).expanduser()
    if path.suffix == ".py" or os.sep in name or "/" in name:
        if not path.is_file():
            raise ConfigError(f"no config file at {name!r}; pass a config name ("
                              f"{', '.join(list_configs())}) or the path of a .py file.")
    else:
        found = [d / f"{name}.py" for d in _config_dirs() if (d / f"{name}.py").is_file()]
        if not found:
            import difflib

            close = difflib.get_close_matches(name, list_configs(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config {name!r}.{hint} Configs: "
                              f"{', '.join(list_configs())}; or pass the path of a .py file.")
        path = found[0]
    module = _import_file(path.resolve())
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} defines no get_config(); a config file ends with "
                          "`def get_config(): ...` returning an ml_collections.ConfigDict.")
    config = module.get_config(variant) if sep else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() returned a {type(config).__name__}, not an "
                          "ml_collections.ConfigDict.")
    return config

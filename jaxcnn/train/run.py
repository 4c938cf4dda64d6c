"""Everything a run builds from its config before the first compile (`setup` -> `Run`), the
facts it resolved (`Run.info`, saved as run.json), its initial state, and the evaluator
that runs a compiled eval step over a split. Shared by `fit`, `lr_find` and
`evaluate_checkpoint`."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcnn.data.augment import Augment, random_flip
from jaxcnn.data.pipeline import (
    check_batch_size,
    eval_batches,
    is_streamed,
    make_feeder,
    make_mesh,
    replicated,
    steps_per_epoch,
)
from jaxcnn.data.sources import Source, Splits, load_data
from jaxcnn.errors import ConfigError
from jaxcnn.models import create_model, get_model_spec, model_options
from jaxcnn.train import monitor
from jaxcnn.train.config import check_image_size, validate_config
from jaxcnn.train.distributed import barrier
from jaxcnn.train.state import TrainState, create_state
from jaxcnn.train.steps import jit_eval_step
from jaxcnn.train.tasks import Task, get_task
from jaxcnn.train.warmstart import (
    TORCHVISION,
    load_init_variables,
    merge_variables,
    reinit_layers,
)


@dataclasses.dataclass
class Run:
    """Everything built from a config before the first compile."""

    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    splits: Splits
    model: nn.Module
    model_kwargs: dict[str, Any]  # what create_model got (num_classes, in_channels, ...)
    task: Task
    augment: Augment
    steps_per_epoch: int
    eval_batch_size: int
    variables: dict

    def on_device(self) -> str | bool:
        """config.data.on_device as `make_feeder` takes it."""
        on_device = self.config.data.on_device
        return "auto" if on_device == "auto" else on_device == "on"

    def info(self) -> dict[str, Any]:
        """What this run resolved, for everything that later reads its workdir (run.json,
        `jaxcnn.rundir.RunDir.info`): the model and the options it was built with (compute
        dtype aside), the trained input shape and normalization, the class names and how
        the best checkpoint is chosen."""
        kwargs = {k: _plain(v) for k, v in self.model_kwargs.items() if k != "dtype"}
        return {
            "model": self.config.model.name,
            "model_kwargs": kwargs,
            "num_classes": self.splits.num_classes,
            "input_shape": list(self.splits.train.image_shape),
            "mean": list(self.config.data.mean),
            "std": list(self.config.data.std),
            "class_names": list(self.splits.class_names),
            "dataset": self.splits.name,
            "task": self.task.name,
            "best_metric": self.task.best_metric,
            "best_mode": self.task.best_mode,
        }


def _plain(value: Any) -> Any:
    """ConfigDicts (nested model options) as plain dicts, for JSON."""
    if isinstance(value, ml_collections.ConfigDict):
        return value.to_dict()
    return value


def setup(config: ml_collections.ConfigDict, *, data: Splits | None = None,
          init_variables: dict | None = None) -> Run:
    """Validate the config, load the data, build the model and its initial variables.
    Every config and data error is raised here, before anything is compiled."""
    validate_config(config)
    if config.init.reinit_layers and init_variables is None and not config.init.path:
        raise ConfigError(
            f"init.reinit_layers={tuple(config.init.reinit_layers)} re-initializes layers of "
            "loaded weights, but there are none: set init.path (e.g. torchvision:vgg11_bn)."
        )
    mesh = make_mesh()
    check_batch_size(config.data.batch_size, mesh)
    eval_bs = config.data.eval_batch_size or config.data.batch_size
    check_batch_size(eval_bs, mesh, "data.eval_batch_size")
    spec = get_model_spec(config.model.name)
    task = get_task(config.task or spec.task, config)
    if data is None:
        with monitor.phase(f"loading data ({config.data.source})"):
            splits = load_data(config.data, seed=config.seed)
    else:
        splits = data
    if splits.valid is splits.test:
        warnings.warn(
            "data.valid_fraction=0: the best checkpoint and plateau schedules are chosen on the "
            "TEST split, which then no longer measures generalization; set "
            "--config.data.valid_fraction=0.1 to carve a validation split from train.",
            stacklevel=2)
    missing = [k for k in task.batch_keys if k not in splits.train.arrays]
    if missing:
        raise ConfigError(
            f"task {task.name!r} needs {missing} in every example; dataset {splits.name!r} "
            f"has {sorted(splits.train.arrays)}."
        )
    task.check_data(splits)
    spe = steps_per_epoch(len(splits.train), config.data.batch_size)
    if spe == 0:
        raise ConfigError(
            f"data.batch_size={config.data.batch_size} is larger than the {len(splits.train)} "
            "training examples; lower it."
        )
    channels = splits.train.image_shape[-1]
    check_image_size(config, splits.train.image_shape[:2])
    if len(config.data.mean) not in (1, channels):
        raise ConfigError(
            f"data.mean has {len(config.data.mean)} values but the images have {channels} "
            "channel(s)."
        )
    kwargs = dict(config.model.kwargs)
    outputs = task.num_outputs(splits)
    if outputs is not None and "num_classes" not in kwargs:
        kwargs["num_classes"] = outputs
    if "in_channels" in model_options(config.model.name) and "in_channels" not in kwargs:
        kwargs["in_channels"] = channels  # the data decides: digits 1, CIFAR 3
    if config.bf16:
        kwargs["dtype"] = jnp.bfloat16  # compute only: param_dtype stays float32
    model = create_model(config.model.name, **kwargs)
    streamed = is_streamed(splits.train)
    modes = (config.data.padding_mode, config.data.flip_mode)
    if streamed and (config.data.crop_size or config.data.ten_crop
                     or (modes != ("constant", "random")
                         and (config.data.crop_padding or config.data.flip))):
        raise ConfigError(
            f"the host input pipeline of {splits.name!r} (a streamed source) crops with "
            "data.resized_crop or data.crop_padding (zero padding) and flips at random; "
            f"data.crop_size / data.ten_crop / data.padding_mode={modes[0]!r} / "
            f"data.flip_mode={modes[1]!r} run on the device only: use an in-memory source "
            "for them, or the host's crops."
        )
    augment = Augment.from_config(config.data, on_host=streamed)
    if (config.data.tta or augment.ten_crop) and not task.reports_confusion:
        raise ConfigError(
            f"data.tta / data.ten_crop average class scores over views of each image; the "
            f"{task.name!r} task's outputs are not class scores (a mirrored view's mask would "
            "need mirroring back). Set data.tta=0 and data.ten_crop=False for it."
        )
    example = _example(splits, augment)
    barrier("setup")  # every process has its data and model before the first collective
    rngs = {"params": jax.random.PRNGKey(config.seed),
            "dropout": jax.random.PRNGKey(config.seed + 1)}
    # train=True creates the layers that only exist in training (auxiliary heads).
    init = jax.jit(lambda r, b: model.init(r, *task.model_inputs(b), train=True),
                   out_shardings=replicated(mesh))
    with monitor.phase(f"initializing {config.model.name}"):
        variables = dict(jax.block_until_ready(init(rngs, example)))
    variables.setdefault("batch_stats", {})
    variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    loaded = init_variables
    if loaded is None and config.init.path:
        loaded = load_init_variables(config.init.path, config)
    if loaded is not None:
        # ImageNet weights for another number of classes: keep the backbone, fresh head.
        reinit = config.init.reinit_head or config.init.path.startswith(TORCHVISION)
        merged = merge_variables(variables, loaded, reinit_head=reinit,
                                 where=config.init.path or "passed to fit()")
        if config.init.reinit_layers:  # a new head of several layers
            merged = reinit_layers(jax.device_get(variables), merged,
                                   tuple(config.init.reinit_layers))
        variables = jax.device_put(merged, replicated(mesh))
    if config.init.data_examples:
        variables = init_from_data(model, augment, splits.train, variables,
                                   config.init.data_examples, config.seed, config.model.name)
        variables = jax.device_put(variables, replicated(mesh))
    if config.data.flip and config.data.flip_mode == "alternate":
        splits = dataclasses.replace(splits, train=preflip(splits.train, config.seed))
    return Run(config, mesh, splits, model, kwargs, task, augment, spe, eval_bs, variables)


def init_from_data(model: nn.Module, augment: Augment, source: Source, variables: dict,
                   n: int, seed: int, name: str = "") -> dict:
    """The family's data-dependent initialisation (`model.init_from_data`, e.g. airbench's
    whitening layer) from `n` normalized training images drawn with `seed`."""
    if not hasattr(model, "init_from_data"):
        raise ConfigError(
            f"init.data_examples={n} asks for a data-dependent initialisation, which model "
            f"{name or type(model).__name__!r} does not have (airbench94 has one: its "
            "whitening layer). Set init.data_examples=0."
        )
    pick = np.sort(np.random.default_rng([seed, 0xA1B]).permutation(len(source))[:n])
    images = augment(None, {"image": jnp.asarray(source.take(pick)["image"])}, train=False)
    return model.init_from_data(variables, images["image"])


def preflip(source: Source, seed: int) -> Source:
    """The training split with a random half of its examples mirrored once (airbench's
    epoch-0 `batch_flip_lr`), for `data.flip_mode="alternate"`: the step then mirrors every
    example in odd epochs (`jaxcnn.data.augment.alternating_flip`)."""
    with jax.default_device(jax.devices("cpu")[0]):
        flipped = random_flip(jax.random.PRNGKey(seed + 0x5F), dict(source.arrays))
    return Source(jax.device_get(flipped))


def _example(splits: Splits, augment: Augment) -> dict:
    """Two augmented (eval-mode) training examples at the size the model trains on (a
    ten-crop evaluation keeps whole images, its crops have the training size): shapes for
    init and eval_shape."""
    batch = {k: jnp.asarray(v) for k, v in splits.train.take(np.arange(2)).items()}
    return dataclasses.replace(augment, ten_crop=False)(None, batch, train=False)


def sum_keys(run: Run) -> tuple[str, ...]:
    """The metric sums the task's training loss returns (the keys of TrainState.sums)."""

    def sums(variables: dict, batch: dict) -> dict:
        out, _ = run.model.apply(variables, *run.task.model_inputs(batch), train=True,
                                 method=run.task.model_method,
                                 rngs={"dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])
        return run.task.loss(out, batch)[1]

    return tuple(sorted(jax.eval_shape(sums, run.variables, _example(run.splits, run.augment))))


def eval_metric_names(run: Run) -> list[str] | None:
    """The names of the summarized validation metrics of the run's task (traced, not run);
    None for a task that reduces its eval outputs otherwise than by sums (detection mAP)."""
    if type(run.task).reduce is not Task.reduce:
        return None

    def sums(variables: dict, batch: dict) -> dict:
        out = run.model.apply(variables, *run.task.model_inputs(batch), train=False,
                              method=run.task.model_method)
        return run.task.eval_metrics(out, batch)

    keys = jax.eval_shape(sums, run.variables, _example(run.splits, run.augment))
    return sorted(run.task.summarize({k: 1.0 for k in keys}))


def initial_state(run: Run, tx: optax.GradientTransformation, mesh: Any = None) -> TrainState:
    """A fresh TrainState from `run`'s initial variables, replicated on `mesh` (or run.mesh)."""
    variables = jax.device_get(run.variables) if mesh is not None else run.variables
    state = create_state(variables, tx, run.config.seed, sum_keys(run),
                         lookahead=run.config.lookahead.period > 0)
    barrier("initial_state")
    return jax.device_put(state, replicated(run.mesh if mesh is None else mesh))


class Evaluator:
    """Runs a compiled eval (or predict) step over a split, compiled once on its first batch."""

    def __init__(self, run: Run, step_fn: Callable):
        self.run = run
        self.jitted = jit_eval_step(step_fn, run.mesh)
        self.compiled = None
        self.compile_seconds = 0.0
        self.feeders: dict[int, Any] = {}

    def batches(self, split: str) -> Iterator[dict]:
        """Padded, weighted eval batches of `split` (valid or test)."""
        source = getattr(self.run.splits, split)
        key = id(source)  # valid is often the test split itself: one feeder (and stream)
        if key not in self.feeders:
            self.feeders[key] = make_feeder(source, self.run.mesh, self.run.on_device())
        return eval_batches(self.feeders[key], len(source), self.run.eval_batch_size)

    def call(self, state: TrainState, batch: dict) -> Any:
        """The compiled step on one batch."""
        if self.compiled is None:
            t0 = time.perf_counter()
            self.compiled = self.jitted.lower(state, batch).compile()
            self.compile_seconds = time.perf_counter() - t0
        return self.compiled(state, batch)

    def close(self) -> None:
        """Stop the input worker processes of streamed splits."""
        for feeder in self.feeders.values():
            if hasattr(feeder, "close"):
                feeder.close()
        self.feeders.clear()

    def metrics(self, state: TrainState, split: str) -> dict[str, float]:
        """Summarized metrics of the whole split (`Task.reduce` of the per-batch outputs)."""
        return self.run.task.reduce(
            jax.device_get(self.call(state, batch)) for batch in self.batches(split))

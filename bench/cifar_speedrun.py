"""The CIFAR-10 speedrun through jaxcnn: airbench94's method (configs/cifar10_speedrun.py)
with jaxcnn's model, optimizer, compiled train step (lookahead, alternating flip, reflect
translation inside it) and TTA eval step, N timed runs on the arrays of bench/cifar_data.py.

    python bench/cifar_speedrun.py --runs 5                          # a GPU: the record
    python bench/cifar_speedrun.py --runs 1 --train-per-class 1000 --epochs 3   # a CPU

Each run, timed like airbench94 times itself (utils.py `train`): from the fresh variables
to the test accuracy, i.e. the whitening initialisation from 5,000 training images, the
random pre-flip of the training set, the 476 training steps and the test-time-augmented
evaluation of the 10,000 test images, with `block_until_ready`. Compilation is done once
before the runs (`.lower().compile()` of the train and eval steps and a first call of
the small init programs) and reported apart. Prints one JSON line per run."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `configs` and `bench`

from bench.cifar_data import ARRAYS, load  # noqa: E402
from configs import cifar10_speedrun  # noqa: E402
from jaxcnn.data import from_arrays  # noqa: E402
from jaxcnn.data.augment import random_flip  # noqa: E402
from jaxcnn.data.pipeline import (  # noqa: E402
    OnDeviceData,
    epoch_permutation,
    eval_batches,
    replicated,
)
from jaxcnn.train import (  # noqa: E402
    create_state,
    jit_eval_step,
    jit_train_step,
    make_eval_step,
    make_optimizer,
    make_train_step,
    setup,
)
from jaxcnn.train.averaging import lookahead_from_config  # noqa: E402
from jaxcnn.train.run import init_from_data, sum_keys  # noqa: E402


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--data", type=Path, default=ARRAYS, help="bench/cifar_data.py's .npz")
    p.add_argument("--epochs", type=float, default=None, help="default: the config's 9.9")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's 1024")
    p.add_argument("--eval-batch-size", type=int, default=None)
    p.add_argument("--whiten-images", type=int, default=None, help="default: 5000")
    p.add_argument("--train-per-class", type=int, default=0, help="a class-balanced subset")
    p.add_argument("--test-per-class", type=int, default=0)
    p.add_argument("--fp32", action="store_true", help="float32 compute (default bf16)")
    p.add_argument("--seed", type=int, default=0, help="run r uses seed + r")
    return p.parse_args(argv)


def _per_class(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not k:
        return x, y
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k] for c in np.unique(y)])
    idx = rng.permutation(idx)
    return x[idx], y[idx]


def config_for(args: argparse.Namespace):
    """configs/cifar10_speedrun.py with the command line's overrides."""
    config = cifar10_speedrun.get_config()
    if args.epochs is not None:
        config.num_epochs = args.epochs
    if args.batch_size is not None:  # keep airbench's per-example rate (lr scales with batch)
        config.optimizer.lr *= args.batch_size / config.data.batch_size
        config.data.batch_size = args.batch_size
    if args.eval_batch_size is not None:
        config.data.eval_batch_size = args.eval_batch_size
    if args.whiten_images is not None:
        config.init.data_examples = args.whiten_images
    config.bf16 = not args.fp32
    config.progress = False
    return config


def _without_data_init(config):
    config = ml_collections.ConfigDict(config.to_dict())
    config.init.data_examples = 0
    return config


class Speedrun:
    """The compiled pieces, built and compiled once; `__call__(seed)` is one timed run."""

    def __init__(self, config, splits):
        self.config = config
        t0 = time.perf_counter()
        # Each timed run initialises its own whitening layer; setup() need not.
        self.whiten_examples = config.init.data_examples
        self.run = run = setup(_without_data_init(config), data=splits)
        spe = run.steps_per_epoch
        self.total = math.ceil(spe * config.num_epochs)
        self.tx, _ = make_optimizer(config, run.variables["params"], spe)
        self.lookahead = lookahead_from_config(config, self.total)
        self.sum_keys = sum_keys(run)
        self.train_feeder = OnDeviceData(run.splits.train, run.mesh)
        self.test_feeder = OnDeviceData(run.splits.test, run.mesh)
        self.images = self.train_feeder.arrays["image"]
        self.n = len(run.splits.train)
        rep = replicated(run.mesh)
        model, task = run.model, run.task
        example = {k: jnp.asarray(v) for k, v in run.splits.train.take(np.arange(2)).items()}
        example = run.augment(None, example, train=False)
        self._init = jax.jit(
            lambda key: model.init({"params": key}, *task.model_inputs(example), train=True),
            out_shardings=rep)
        self._preflip = jax.jit(lambda key, images: random_flip(key, {"image": images})["image"],
                                out_shardings=rep)
        step = make_train_step(model, task, self.tx, run.augment, spe, lookahead=self.lookahead)
        evaluate = make_eval_step(model, task, run.augment, tta=config.data.tta)
        # Compile everything once, on the shapes of the timed runs.
        state = self._state(0)
        idx = epoch_permutation(0, 0, self.n)[:config.data.batch_size]
        self.train_step = jit_train_step(step, run.mesh).lower(
            state, self.train_feeder.batch(idx)).compile()
        batch = next(iter(eval_batches(self.test_feeder, len(run.splits.test),
                                       run.eval_batch_size)))
        self.eval_step = jit_eval_step(evaluate, run.mesh).lower(state, batch).compile()
        jax.block_until_ready(self._preflip(jax.random.PRNGKey(0), self.images))
        self.compile_seconds = time.perf_counter() - t0

    def _state(self, seed: int):
        """Fresh variables, the whitening layer set from the data, the optimizer state."""
        variables = dict(self._init(jax.random.PRNGKey(seed)))
        variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
        if self.whiten_examples:  # the trainer's own data-dependent init (airbench whitening)
            variables = init_from_data(self.run.model, self.run.augment, self.run.splits.train,
                                       variables, self.whiten_examples, seed)
        state = create_state(variables, self.tx, seed, self.sum_keys,
                             lookahead=self.lookahead is not None)
        return jax.device_put(state, replicated(self.run.mesh))

    def __call__(self, seed: int) -> dict:
        """One timed run: fresh init -> trained -> TTA test accuracy."""
        config, bs, spe = self.config, self.config.data.batch_size, self.run.steps_per_epoch
        t0 = time.perf_counter()
        state = self._state(seed)
        if config.data.flip and config.data.flip_mode == "alternate":
            # airbench flips a random half of the training set once (its epoch-0 `flip`);
            # the train step then flips every image in odd epochs.
            self.train_feeder.arrays = {**self.train_feeder.arrays, "image": self._preflip(
                jax.random.PRNGKey(seed + 0x5F), self.images)}
        step = 0
        for epoch in range(math.ceil(self.total / spe)):
            order = epoch_permutation(seed, epoch, self.n)
            for i in range(min(spe, self.total - step)):
                state, _ = self.train_step(state, self.train_feeder.batch(
                    order[i * bs:(i + 1) * bs]))
                step += 1
        jax.block_until_ready(state)
        t_train = time.perf_counter()
        total = None
        for batch in eval_batches(self.test_feeder, len(self.run.splits.test),
                                  self.run.eval_batch_size):
            out = self.eval_step(state, batch)
            total = out if total is None else jax.tree.map(jnp.add, total, out)
        metrics = self.run.task.summarize(jax.device_get(total))
        t_end = time.perf_counter()
        bad = int(jax.device_get(state.bad_step))
        return {"tta_val_acc": round(metrics["accuracy"], 4), "seconds": round(t_end - t0, 3),
                "train_seconds": round(t_train - t0, 3), "eval_seconds": round(t_end - t_train, 3),
                "steps": step, "bad_step": bad}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    data = load(args.data)
    x_train, y_train = _per_class(data["x_train"], data["y_train"], args.train_per_class, 1)
    x_test, y_test = _per_class(data["x_test"], data["y_test"], args.test_per_class, 2)
    splits = from_arrays(x_train, y_train, x_test, y_test, name="cifar10",
                         class_names=tuple(str(c) for c in data["classes"]))
    config = config_for(args)
    bench = Speedrun(config, splits)
    device = jax.devices()[0]
    base = {"bench": "speedrun", "impl": "jaxcnn", "jax": jax.__version__,
            "device": f"{jax.device_count()} x {device.device_kind}",
            "compile_seconds": round(bench.compile_seconds, 2),
            "epochs": config.num_epochs, "batch_size": config.data.batch_size,
            "train_examples": len(x_train), "test_examples": len(x_test),
            "dtype": "fp32" if args.fp32 else "bf16", "load": os.getloadavg()[0]}
    for r in range(args.runs):
        print(json.dumps({**base, "run": r, **bench(args.seed + r)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

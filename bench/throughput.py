"""Training and inference images/s of any registered model through jaxcnn's own public
train step (BatchNorm, weight decay, SGD momentum, the donated and sharded step users run),
on synthetic data already on the device, over every local device.

    python bench/throughput.py --model resnet50 --batch 256 --size 224 --bf16

Prints one JSON line per phase: compile time (ahead of time, `.lower().compile()`) reported
apart from the steady state, which is timed after warm-up with `block_until_ready`, no host
syncs in the loop, and XLA's FLOP and byte counts of the step with the rates they imply."""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data import from_arrays
from jaxcnn.data.pipeline import batch_sharding
from jaxcnn.train import (
    default_config,
    initial_state,
    jit_eval_step,
    jit_train_step,
    make_optimizer,
    make_predict_step,
    make_train_step,
    setup,
)


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=256, help="global batch (all devices)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--bf16", action="store_true", help="bf16 compute, fp32 params")
    p.add_argument("--phases", default="train,inference")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--model-kwargs", default="{}", help='JSON, e.g. \'{"stem": "cifar"}\'')
    return p.parse_args(argv)


def _config(args: argparse.Namespace):
    config = default_config()
    config.model.name = args.model
    config.model.kwargs = json.loads(args.model_kwargs)
    config.bf16 = args.bf16
    config.data.batch_size = args.batch
    config.data.eval_batch_size = args.batch
    config.data.mean = (127.5,)
    config.data.std = (64.0,)
    config.optimizer.name = "sgd"
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-5
    config.progress = False
    return config


def _synthetic(args: argparse.Namespace):
    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, args.channels)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = rng.integers(0, args.num_classes, args.batch).astype(np.int32)
    names = tuple(str(i) for i in range(args.num_classes))
    return from_arrays(images, labels, images, labels, class_names=names)


def _time(fn, state, batch, *, warmup: int, steps: int, carry_state: bool
          ) -> tuple[float, float, object]:
    """(first-call seconds, steady-state seconds per step, live state)."""

    def call(state):
        out = fn(state, batch)
        return out, (out[0] if carry_state else state)  # a donated state is replaced

    start = time.perf_counter()
    out, state = call(state)
    jax.block_until_ready(out)
    first = time.perf_counter() - start
    for _ in range(warmup):
        out, state = call(state)
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(steps):
        out, state = call(state)
    jax.block_until_ready(out)
    return first, (time.perf_counter() - start) / steps, state


def measure(args: argparse.Namespace) -> list[dict]:
    """One record per phase."""
    run = setup(_config(args), data=_synthetic(args))
    tx, _ = make_optimizer(run.config, run.variables["params"], run.steps_per_epoch)
    state = initial_state(run, tx)
    batch = {k: jnp.asarray(v) for k, v in run.splits.train.take(np.arange(args.batch)).items()}
    batch = jax.device_put(batch, batch_sharding(run.mesh))
    base = {
        "framework": "jaxcnn",
        "jax": jax.__version__,
        "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "model": args.model,
        "batch": args.batch,
        "size": args.size,
        "dtype": "bf16" if args.bf16 else "fp32",
    }
    records = []
    for phase in args.phases.split(","):
        if phase == "train":
            jitted = jit_train_step(
                make_train_step(run.model, run.task, tx, run.augment, run.steps_per_epoch), run.mesh
            )
        else:
            jitted = jit_eval_step(make_predict_step(run.model, run.task, run.augment), run.mesh)
        t0 = time.perf_counter()
        step = jitted.lower(state, batch).compile()
        compile_seconds = time.perf_counter() - t0
        first, per_step, state = _time(step, state, batch, warmup=args.warmup,
                                       steps=args.steps, carry_state=phase == "train")
        records.append({
            **base, "phase": phase, "compile_seconds": round(compile_seconds, 3),
            "compile_and_first_call_seconds": round(compile_seconds + first, 3),
            "steps": args.steps, "images_per_second": round(args.batch / per_step, 1),
            **_roofline(step, per_step),
        })
    return records


def _roofline(compiled, seconds_per_step: float) -> dict:
    """XLA's own count of the compiled step's FLOPs and bytes accessed, and the rates the
    measured step time implies (read against the device's peak: README, bench/roofline.py)."""
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        flops, nbytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    except Exception:  # cost analysis is optional per backend
        return {}
    return {"xla_gflop_per_step": round(flops / 1e9, 2),
            "xla_gbytes_per_step": round(nbytes / 1e9, 3),
            "achieved_tflops": round(flops / seconds_per_step / 1e12, 2),
            "achieved_tbytes_per_s": round(nbytes / seconds_per_step / 1e12, 3)}


def main(argv: list[str] | None = None) -> None:
    for record in measure(_parse(argv)):
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

"""Compile time, HLO size and steady-state step time of jaxcnn's train step (with its NaN guard)
against a plain Flax train step (flax examples/imagenet style: augment, forward, loss, grads,
optax update, no guard and no metric sums), same model, optimizer and batch, interleaved in one
process; plus the per-leaf `jnp.where` guard jaxcnn used before (`--variants` to choose).

    python bench/compile_guard.py --model small_cnn --rounds 3
    python bench/compile_guard.py --model resnet18 --size 32 --rounds 2

Prints one JSON line per (variant, round) and a summary line with the median ratios to plain."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="steady-state steps timed per round")
    p.add_argument("--variants", default="plain,jaxcnn,select_per_leaf")
    return p.parse_args()


def main() -> int:
    """Build the three steps and time them, interleaved."""
    import numpy as np

    from jaxcnn.data import from_arrays
    from jaxcnn.data.pipeline import OnDeviceData, train_indices
    from jaxcnn.train import default_config, initial_state, make_optimizer, make_train_step, setup

    args = _parse()
    rng = np.random.default_rng(0)
    n = args.batch_size * 4
    x = rng.integers(0, 256, (n, args.size, args.size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    config = default_config()
    config.model.name = args.model
    config.data.batch_size = args.batch_size
    config.data.mean, config.data.std = (127.5,), (64.0,)
    config.data.crop_padding, config.data.flip = 4, True
    config.optimizer.name = "sgd"
    config.optimizer.weight_decay = 5e-4
    config.progress = False
    run = setup(config, data=from_arrays(x, y, x[:64], y[:64], valid_fraction=0.25))
    tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch)
    feeder = OnDeviceData(run.splits.train, run.mesh)
    batch = feeder.batch(train_indices(0, 0, 0, len(run.splits.train), args.batch_size))
    model, task, augment, spe = run.model, run.task, run.augment, run.steps_per_epoch

    def plain_step(state, batch):
        r_aug, r_drop = jax.random.split(jax.random.fold_in(state.rng, state.step))
        batch = augment(r_aug, batch, train=True)

        def loss_fn(params):
            out, updates = model.apply(dict(state.variables, params=params),
                                       *task.model_inputs(batch), train=True,
                                       rngs={"dropout": r_drop}, mutable=["batch_stats"])
            return task.loss(out, batch)[0], updates.get("batch_stats", state.batch_stats)

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, batch_stats=stats,
                             opt_state=opt_state), {"loss": loss}

    jaxcnn_step = make_train_step(model, task, tx, augment, spe)

    def select_per_leaf(state, batch):  # jaxcnn's guard before issue 11
        new, metrics = plain_step(state, batch)
        ok = jnp.isfinite(metrics["loss"]) & (state.bad_step < 0)
        new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
        return new.replace(bad_step=jnp.where(ok | (state.bad_step >= 0), state.bad_step,
                                              state.step)), metrics

    steps = {"plain": plain_step, "jaxcnn": jaxcnn_step, "select_per_leaf": select_per_leaf}
    chosen = args.variants.split(",")
    results: dict[str, list[dict]] = {v: [] for v in chosen}
    for r in range(args.rounds):
        for name in chosen:
            fn = steps[name]
            state = jax.tree.map(jnp.copy, initial_state(run, tx))  # donated below
            t0 = time.perf_counter()
            lowered = jax.jit(lambda s, b, fn=fn: fn(s, b), donate_argnums=0).lower(state, batch)
            compiled = lowered.compile()
            compile_s = time.perf_counter() - t0
            hlo_ops = sum(1 for line in compiled.as_text().splitlines() if " = " in line)
            state, _ = compiled(state, batch)  # warm
            jax.block_until_ready(state)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                state, m = compiled(state, batch)
            jax.block_until_ready(state)
            step_ms = (time.perf_counter() - t0) / args.steps * 1e3
            rec = {"variant": name, "round": r, "model": args.model,
                   "compile_s": round(compile_s, 3), "hlo_ops": hlo_ops,
                   "step_ms": round(step_ms, 3)}
            results[name].append(rec)
            print(json.dumps(rec), flush=True)
    med = {v: {k: statistics.median(x[k] for x in recs) for k in ("compile_s", "step_ms")}
           for v, recs in results.items()}
    if "plain" in med:
        summary = {v: {"compile_vs_plain": round(m["compile_s"] / med["plain"]["compile_s"], 3),
                       "step_vs_plain": round(m["step_ms"] / med["plain"]["step_ms"], 3),
                       "hlo_ops": results[v][0]["hlo_ops"]} for v, m in med.items()}
        print(json.dumps({"summary": summary, "model": args.model, "size": args.size,
                          "batch": args.batch_size, "devices": jax.device_count(),
                          "jax": jax.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

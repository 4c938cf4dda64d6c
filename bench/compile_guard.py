"""Compile time, HLO size and steady-state step time of jaxcnn's train step (with its NaN guard)
against a plain Flax train step (flax examples/imagenet style: augment, forward, loss, grads,
optax update, no guard and no metric sums), same model, optimizer and batch, interleaved in one
process (the order reversed every other round). `--variants` adds the formulations compared
for issue 11: `flax_example` (plain plus the loss and accuracy metrics of the Flax example's
`compute_metrics`), `unguarded` (jaxcnn's metric sums and gradient norm, no guard: the floor
of any guard), `two_norms_cond` (the guard before: isfinite of the loss and of two tree norms,
one `lax.cond`), `select_per_leaf` (the guard before that: a `jnp.where` per state leaf).

    python bench/compile_guard.py --model small_cnn --rounds 5
    python bench/compile_guard.py --model resnet18 --size 32 --batch-size 16 --rounds 3

Compile is reported as wall seconds and as process CPU seconds (all threads; less sensitive
to other load on a shared machine); the steady-state step is timed after a warm-up call.
Prints one JSON line per (variant, round) and a summary line with the median ratios to plain
and the [min, max] range of each ratio over the rounds."""

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
    p.add_argument("--variants", default="plain,jaxcnn,unguarded,two_norms_cond")
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

    def flax_example_step(state, batch):  # plain + examples/imagenet's compute_metrics
        r_aug, r_drop = jax.random.split(jax.random.fold_in(state.rng, state.step))
        batch = augment(r_aug, batch, train=True)

        def loss_fn(params):
            out, updates = model.apply(dict(state.variables, params=params),
                                       *task.model_inputs(batch), train=True,
                                       rngs={"dropout": r_drop}, mutable=["batch_stats"])
            return task.loss(out, batch)[0], (out, updates.get("batch_stats", state.batch_stats))

        (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
        params = optax.apply_updates(state.params, updates)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return state.replace(step=state.step + 1, params=params, batch_stats=stats,
                             opt_state=opt_state), {"loss": loss, "accuracy": accuracy}

    jaxcnn_step = make_train_step(model, task, tx, augment, spe)

    def select_per_leaf(state, batch):  # jaxcnn's guard before issue 11
        new, metrics = plain_step(state, batch)
        ok = jnp.isfinite(metrics["loss"]) & (state.bad_step < 0)
        new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
        return new.replace(bad_step=jnp.where(ok | (state.bad_step >= 0), state.bad_step,
                                              state.step)), metrics

    def metric_step(state, batch, guard):  # jaxcnn's metrics; the guard of an earlier jaxcnn
        r_aug, r_drop = jax.random.split(jax.random.fold_in(state.rng, state.step))
        batch = augment(r_aug, batch, train=True)

        def loss_fn(params):
            out, updates = model.apply(dict(state.variables, params=params),
                                       *task.model_inputs(batch), train=True,
                                       rngs={"dropout": r_drop}, mutable=["batch_stats"])
            loss, sums = task.loss(out, batch)
            return loss, (sums, updates.get("batch_stats", state.batch_stats))

        (loss, (sums, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
        params = optax.apply_updates(state.params, updates)
        fresh = (state.step % spe) == 0
        new_sums = {k: jnp.where(fresh, 0.0, state.sums[k]) + sums[k].astype(jnp.float32)
                    for k in state.sums}
        new = state.replace(step=state.step + 1, params=params, batch_stats=stats,
                            opt_state=opt_state, sums=new_sums)
        metrics = {**sums, "loss": loss, "grad_norm": grad_norm}
        if guard:
            ok = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
                  & jnp.isfinite(optax.tree.norm(updates)) & (state.bad_step < 0))
            new = jax.lax.cond(ok, lambda n, s: n, lambda n, s: s, new, state)
            new = new.replace(bad_step=jnp.where(ok | (state.bad_step >= 0), state.bad_step,
                                                 state.step))
        return new, metrics

    steps = {"plain": plain_step, "flax_example": flax_example_step, "jaxcnn": jaxcnn_step,
             "select_per_leaf": select_per_leaf,
             "unguarded": lambda s, b: metric_step(s, b, False),
             "two_norms_cond": lambda s, b: metric_step(s, b, True)}
    chosen = args.variants.split(",")
    results: dict[str, list[dict]] = {v: [] for v in chosen}
    for r in range(args.rounds):
        for name in (chosen if r % 2 == 0 else chosen[::-1]):
            fn = steps[name]
            state = jax.tree.map(jnp.copy, initial_state(run, tx))  # donated below
            t0, c0 = time.perf_counter(), time.process_time()
            lowered = jax.jit(lambda s, b, fn=fn: fn(s, b), donate_argnums=0).lower(state, batch)
            compiled = lowered.compile()
            compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0
            hlo_ops = sum(1 for line in compiled.as_text().splitlines() if " = " in line)
            state, _ = compiled(state, batch)  # warm
            jax.block_until_ready(state)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                state, m = compiled(state, batch)
            jax.block_until_ready(state)
            step_ms = (time.perf_counter() - t0) / args.steps * 1e3
            rec = {"variant": name, "round": r, "model": args.model,
                   "compile_s": round(compile_s, 3), "compile_cpu_s": round(compile_cpu_s, 3),
                   "hlo_ops": hlo_ops, "step_ms": round(step_ms, 3)}
            results[name].append(rec)
            print(json.dumps(rec), flush=True)
    keys = ("compile_s", "compile_cpu_s", "step_ms")
    if "plain" in results:
        plain = results["plain"]
        summary = {}
        for v, recs in results.items():
            row = {"hlo_ops": recs[0]["hlo_ops"]}
            for k in keys:  # ratio to plain within each round: median and range
                ratios = [a[k] / b[k] for a, b in zip(recs, plain, strict=True)]
                row[f"{k}_vs_plain"] = round(statistics.median(ratios), 3)
                row[f"{k}_vs_plain_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
                row[f"{k}_median"] = round(statistics.median(x[k] for x in recs), 3)
            summary[v] = row
        print(json.dumps({"summary": summary, "model": args.model, "size": args.size,
                          "batch": args.batch_size, "devices": jax.device_count(),
                          "jax": jax.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

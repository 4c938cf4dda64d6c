"""The pure train and eval steps and their compilation: `train_step(state, batch) ->
(state, metrics)` and `eval_step(state, batch) -> metric sums`, compiled once with
`jax.jit`, the state donated and replicated, the batch sharded over the "data" mesh axis
(so BatchNorm statistics are over the global batch and the update is the same on any
number of devices)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxcnn.data.augment import Augment, tta_logits
from jaxcnn.data.pipeline import batch_sharding, replicated
from jaxcnn.train.averaging import Lookahead
from jaxcnn.train.state import TrainState
from jaxcnn.train.tasks import Task


def make_train_step(
    model: nn.Module, task: Task, tx: optax.GradientTransformationExtraArgs,
    augment: Augment, steps_per_epoch: int,
    freeze_stats: Callable[[Any, Any], Any] | None = None,
    eval_forward: bool = False,
    lookahead: Lookahead | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The pure training step (not yet compiled). `freeze_stats(new, old)` filters the
    BatchNorm statistics after the step; `eval_forward` runs the model in eval mode (running
    statistics, no dropout): a linear probe trains its head on the features it is tested on;
    `lookahead` syncs the variables with the state's slow copy (`state.slow`) after the
    update."""

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        # One key per step, from the state: reproducible and independent of device count.
        r_aug, r_drop = jax.random.split(jax.random.fold_in(state.rng, state.step))
        batch = augment(r_aug, batch, train=True, epoch=state.step // steps_per_epoch)

        def loss_fn(params: Any) -> tuple[jax.Array, tuple[dict, Any]]:
            variables = dict(state.variables, params=params)
            outputs, updates = model.apply(
                variables, *task.model_inputs(batch), train=not eval_forward,
                method=task.model_method,
                rngs={"dropout": r_drop},
                mutable=["batch_stats"],
            )
            loss, sums = task.loss(outputs, batch)
            new_stats = updates.get("batch_stats", state.batch_stats)
            if freeze_stats is not None:  # frozen stages keep their statistics
                new_stats = freeze_stats(new_stats, state.batch_stats)
            return loss, (sums, new_stats)

        (loss, (sums, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
        # One reduction per leaf gives both the squared gradient norm and the check of the
        # update: an update entry that is infinite, NaN or beyond 1.8e19 (its square overflows
        # float32) adds +inf, so grad_sq is finite iff the gradients and the update are (no NaN
        # is made here: --config.debug_nans' checkify must not flag the check itself). Two
        # tree norms (gradients, updates) would compile two reductions per parameter.
        grad_sq = sum(jax.tree.leaves(jax.tree.map(
            lambda g, u: jnp.sum(jnp.square(g) + jnp.where(jnp.isfinite(jnp.square(u)), 0.0,
                                                           jnp.inf)), grads, updates)))
        grad_norm = jnp.sqrt(grad_sq)  # inf on a step whose update failed the check
        params = optax.apply_updates(state.params, updates)
        # Running epoch sums restart at each epoch's first step.
        fresh = (state.step % steps_per_epoch) == 0
        new_sums = {k: jnp.where(fresh, 0.0, state.sums[k]) + sums[k].astype(jnp.float32)
                    for k in state.sums}
        slow = state.slow
        if lookahead is not None:
            slow, fast = lookahead(slow, {"params": params, "batch_stats": batch_stats},
                                   state.step + 1)
            params, batch_stats = fast["params"], fast["batch_stats"]
        new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, sums=new_sums, slow=slow)
        # NaN guard: a non-finite step leaves the state at the last good values, records the
        # step, and freezes training so no poisoned state can ever be checkpointed.
        # The check is on scalars only (the loss and the sum above), and it is applied by one
        # conditional over the whole state (parameters, BN statistics, optimizer state, sums),
        # not a select per leaf: XLA would fuse the scalar predicate into every leaf's select
        # (bench/compile_guard.py measures the alternatives).
        ok = jnp.isfinite(loss + grad_sq) & (state.bad_step < 0)
        new = jax.lax.cond(ok, lambda n, s: n, lambda n, s: s, new, state)
        new = new.replace(bad_step=jnp.where(ok | (state.bad_step >= 0), state.bad_step,
                                             state.step))
        metrics = {**sums, "loss": loss, "grad_norm": grad_norm}  # the mean loss, not its sum
        return new, metrics

    return train_step


def _eval_outputs(model: nn.Module, task: Task, augment: Augment, state: TrainState,
                  batch: dict, tta: int) -> Any:
    """Eval-mode model outputs, averaged over the `tta` views of batch["image"]
    (`jaxcnn.data.augment.tta_logits`: airbench's mirror and translate averaging), or over
    AlexNet's ten patches (`augment.ten_crop`, `Augment.ten_crop_scores`)."""

    def forward(images: jax.Array) -> Any:
        out = model.apply(state.variables, *task.model_inputs({**batch, "image": images}),
                          train=False)
        return getattr(out, "logits", out)

    if augment.ten_crop:
        return augment.ten_crop_scores(forward, batch["image"])
    if not tta:
        return model.apply(state.variables, *task.model_inputs(batch), train=False,
                           method=task.model_method)
    return tta_logits(forward, batch["image"], tta)


def make_eval_step(model: nn.Module, task: Task, augment: Augment, tta: int = 0
                   ) -> Callable[[TrainState, dict], dict]:
    """The pure evaluation step: metric sums over a (padded, weighted) batch; `tta` > 0
    averages the logits over flipped (and translated) views first."""

    def eval_step(state: TrainState, batch: dict) -> dict:
        batch = augment(None, batch, train=False)
        return task.eval_metrics(_eval_outputs(model, task, augment, state, batch, tta), batch)

    return eval_step


def make_predict_step(model: nn.Module, task: Task, augment: Augment, tta: int = 0
                      ) -> Callable[[TrainState, dict], jax.Array]:
    """Model outputs (logits) for a batch, in eval mode (`tta` as in `make_eval_step`)."""

    def predict_step(state: TrainState, batch: dict) -> jax.Array:
        batch = augment(None, batch, train=False)
        out = _eval_outputs(model, task, augment, state, batch, tta)
        return getattr(out, "logits", out)

    return predict_step


def jit_train_step(train_step: Callable, mesh: Mesh) -> Callable:
    """`jax.jit` with shardings declared at the boundary and the state donated."""
    rep, data = replicated(mesh), batch_sharding(mesh)
    return jax.jit(train_step, in_shardings=(rep, data), out_shardings=(rep, rep),
                   donate_argnums=0)


def jit_eval_step(eval_step: Callable, mesh: Mesh) -> Callable:
    """`jax.jit` of an eval/predict step: state replicated, batch sharded, output replicated."""
    rep, data = replicated(mesh), batch_sharding(mesh)
    return jax.jit(eval_step, in_shardings=(rep, data), out_shardings=rep)


def enable_compilation_cache(path: str | None = None, min_compile_seconds: float = 0.5) -> str:
    """Persist compiled programs on disk (default ~/.cache/jaxcnn/xla, or $JAXCNN_XLA_CACHE) so
    a resumed or repeated run skips XLA compilation."""
    import os

    path = os.path.expanduser(path or os.environ.get("JAXCNN_XLA_CACHE", "~/.cache/jaxcnn/xla"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    return path

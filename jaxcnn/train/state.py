"""The train state: everything a bit-identical resume needs, as one pytree of arrays."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization


@flax.struct.dataclass
class TrainState:
    """step: optimizer steps done (epoch and in-epoch position derive from it, so the data
    order resumes exactly); params / batch_stats: the model variables (float32); opt_state:
    optax state (incl. reduce-on-plateau); rng: raw uint32[2] key, folded with the step;
    sums: running sums of the task's metrics over the current epoch (exact train metrics
    after a resume); bad_step: -1, or the first step whose loss or gradient norm was not
    finite (the state then stays frozen at the last good values); slow: the lookahead copy
    {"params", "batch_stats"} (jaxcnn.train.averaging), None without lookahead."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    sums: dict[str, jax.Array]
    bad_step: jax.Array
    slow: Any = None

    @property
    def variables(self) -> dict[str, Any]:
        """The `model.apply` variables."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


def create_state(
    variables: dict[str, Any], tx: optax.GradientTransformation, seed: int,
    sum_keys: tuple[str, ...], lookahead: bool = False,
) -> TrainState:
    """A fresh state from initial model `variables` (float32) and an optimizer; with
    `lookahead`, the slow copy starts as the initial variables."""
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=stats,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(seed + 0x3A5),  # raw uint32 key: plain array in checkpoints
        sums={k: jnp.zeros((), jnp.float32) for k in sum_keys},
        bad_step=jnp.full((), -1, jnp.int32),
        # A copy: the state is donated to the step, and no buffer may be donated twice.
        slow=jax.tree.map(jnp.copy, {"params": params, "batch_stats": stats}) if lookahead
        else None,
    )


def state_to_tree(state: TrainState) -> dict:
    """A plain nested dict of arrays (orbax-friendly: no namedtuples or dataclasses)."""
    return serialization.to_state_dict(state)


def tree_to_state(target: TrainState, tree: dict) -> TrainState:
    """Inverse of `state_to_tree`, shaped like `target`."""
    return serialization.from_state_dict(target, tree)


def flat_shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """{"path/to/leaf": (shape, dtype)} of a nested dict/pytree (for mismatch messages)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p))))
                        for p in path)
        out[name] = (tuple(np.shape(leaf)), str(getattr(leaf, "dtype", type(leaf).__name__)))
    return out

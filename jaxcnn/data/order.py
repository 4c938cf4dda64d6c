"""The training order: which examples make up each batch, a pure function of (seed, epoch),
shared by the on-device path and the host pipeline's worker processes (so both give the same
batches, and a resumed run sees exactly the examples an uninterrupted one would)."""

from __future__ import annotations

import numpy as np


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The training order of epoch `epoch`: a pure function of (seed, epoch, n)."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped, as in the Flax examples)."""
    return n // batch_size


def train_indices(seed: int, epoch: int, step_in_epoch: int, n: int, batch_size: int
                  ) -> np.ndarray:
    """Global indices of training batch `step_in_epoch` of `epoch`."""
    order = epoch_permutation(seed, epoch, n)
    return order[step_in_epoch * batch_size:(step_in_epoch + 1) * batch_size]

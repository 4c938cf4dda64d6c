"""Pure-numpy conversion of PyTorch state_dicts into flax variables.

A key map says, for every source key, which target leaf it fills ("params/layer1_0/conv1/
kernel") and how its array is transformed. `convert` checks, nanoGPT-style, that every
source key is used, every target leaf is filled, and every shape matches, and reports ALL
problems in one CheckpointError."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from jaxcnn.errors import CheckpointError

EvalTransform = Callable[[np.ndarray], np.ndarray]
KeyMap = dict[str, tuple[str, EvalTransform]]  # source key -> (target path "a/b/c", transform)

IGNORED_SUFFIXES: tuple[str, ...] = ("num_batches_tracked",)


def identity(x: np.ndarray) -> np.ndarray:
    """Arrays that keep their layout (biases, BN vectors)."""
    return x


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch Conv2d weight [O, I/groups, kh, kw] -> flax [kh, kw, I/groups, O] (HWIO)."""
    if w.ndim != 4:
        raise ValueError(f"a conv weight has 4 dims [O, I, kh, kw], got shape {w.shape}")
    return w.transpose(2, 3, 1, 0)


def dense_kernel(w: np.ndarray) -> np.ndarray:
    """torch Linear weight [out, in] -> flax Dense kernel [in, out]."""
    if w.ndim != 2:
        raise ValueError(f"a linear weight has 2 dims [out, in], got shape {w.shape}")
    return w.T


def chw_to_hwc_dense_kernel(channels: int, height: int, width: int) -> EvalTransform:
    """The Linear layer that follows torch's `flatten` of a [C, H, W] map: its input order
    is C-major, jaxcnn's NHWC flatten is C-minor, so rows are permuted (HWC) and transposed."""

    def transform(w: np.ndarray) -> np.ndarray:
        out, n_in = w.shape
        if n_in != channels * height * width:
            raise ValueError(
                f"expected {channels}x{height}x{width}={channels * height * width} inputs "
                f"(CHW flatten), got {n_in}"
            )
        w = w.reshape(out, channels, height, width).transpose(2, 3, 1, 0)
        return w.reshape(height * width * channels, out)

    return transform


def batch_norm_leaves(prefix: str, target_path: str) -> dict[str, tuple[str, EvalTransform]]:
    """torch BatchNorm2d (`weight`, `bias`, `running_mean`, `running_var`) -> flax
    `params/<path>/{scale,bias}` and `batch_stats/<path>/{mean,var}`."""
    return {
        f"{prefix}.weight": (f"params/{target_path}/scale", identity),
        f"{prefix}.bias": (f"params/{target_path}/bias", identity),
        f"{prefix}.running_mean": (f"batch_stats/{target_path}/mean", identity),
        f"{prefix}.running_var": (f"batch_stats/{target_path}/var", identity),
    }


def to_numpy(value: Any, key: str = "a weight") -> np.ndarray:
    """A float32 numpy array from a numpy array, jax array or torch tensor (without importing
    torch). Weights are finite real floating-point arrays: int, bool, complex and object
    arrays, and NaN or inf values, raise CheckpointError naming `key` (an int32 kernel would
    otherwise load and train, a NaN one would give NaN logits)."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{key} is not an array ({type(value).__name__}: {err}).") from None
    if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 (safetensors, jax arrays)
        array = array.astype(np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise CheckpointError(
            f"{key} has dtype {array.dtype} (shape {array.shape}); weights must be real "
            "floating-point arrays. The file was not written from a network's weights (or "
            "was cast by mistake): convert it from the original float file."
        )
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise CheckpointError(
            f"{key} holds {bad} NaN or infinite value(s) of {array.size}; the weights are "
            "corrupt (or from a diverged run). Use another copy or an earlier checkpoint."
        )
    return array


def flatten_tree(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": leaf}} -> {"a/b": leaf}."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, path + "/"))
        else:
            flat[path] = value
    return flat


def unflatten_tree(flat: Mapping[str, Any]) -> dict:
    """{"a/b": leaf} -> {"a": {"b": leaf}}."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _listing(title: str, lines: list[str], limit: int = 40) -> str:
    shown = "\n".join(f"  {line}" for line in lines[:limit])
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"{title} ({len(lines)}):\n{shown}{more}"


def convert(
    state_dict: Mapping[str, Any],
    key_map: KeyMap,
    target: Mapping,
    *,
    ignore: Iterable[str] = IGNORED_SUFFIXES,
    strict: bool = True,
    what: str = "state_dict",
) -> dict:
    """Fill the tree `target` (leaves with `.shape`: arrays or ShapeDtypeStructs) from
    `state_dict` through `key_map`; returns a nested dict of numpy arrays.

    Raises one CheckpointError listing every problem: source keys the map does not use
    (unless `strict=False`), mapped keys absent from the source, converted shapes that
    differ from the target's, and target leaves nobody fills. Keys ending in one of
    `ignore` (BatchNorm's num_batches_tracked) are skipped."""
    ignore = tuple(ignore)
    expected = {path: tuple(leaf.shape) for path, leaf in flatten_tree(target).items()}
    out: dict[str, np.ndarray] = {}
    unexpected, missing, mismatched, bad_target, bad_values = [], [], [], [], []
    not_str = [repr(k) for k in state_dict if not isinstance(k, str)]
    if not_str:
        raise CheckpointError(
            f"Cannot convert {what}: {len(not_str)} key(s) are not strings "
            f"({', '.join(not_str[:5])}); a state_dict maps parameter names to tensors."
        )
    for key in state_dict:
        if key.endswith(ignore):
            continue
        if key not in key_map:
            unexpected.append(f"{key} {tuple(np.shape(state_dict[key]))}")
    for key, (path, transform) in key_map.items():
        if key not in state_dict:
            missing.append(f"{key} (for {path} {expected.get(path, '?')})")
            continue
        if path not in expected:
            bad_target.append(f"{key} -> {path}")
            continue
        try:
            array = to_numpy(state_dict[key], key)
        except CheckpointError as err:
            bad_values.append(str(err))
            continue
        try:
            converted = transform(array)
        except ValueError as err:
            mismatched.append(f"{key} {array.shape} -> {path}: {err}")
            continue
        if tuple(converted.shape) != expected[path]:
            mismatched.append(
                f"{key} {array.shape} -> {path}: expected {expected[path]}, got "
                f"{tuple(converted.shape)} after conversion"
            )
            continue
        out[path] = converted
    unfilled = [f"{p} {s}" for p, s in expected.items()
                if p not in out and p not in {v[0] for v in key_map.values()}]  # fmt: skip
    problems = []
    if strict and unexpected:
        problems.append(_listing("unexpected keys in the source (not used)", unexpected))
    if missing:
        problems.append(_listing("missing keys in the source", missing))
    if mismatched:
        problems.append(_listing("shape mismatches", mismatched))
    if bad_target:
        problems.append(_listing("key map targets not in the model", bad_target))
    if unfilled:
        problems.append(_listing("model leaves no key fills", unfilled))
    if bad_values:
        problems.append(_listing("arrays that are not finite float weights", bad_values))
    if problems:
        raise CheckpointError(
            f"Cannot convert {what}: {len(expected)} model leaves, "
            f"{sum(1 for k in state_dict if not k.endswith(ignore))} source arrays.\n"
            + "\n".join(problems)
            + "\nIs the file for this architecture (and number of classes)?"
        )
    return unflatten_tree(out)

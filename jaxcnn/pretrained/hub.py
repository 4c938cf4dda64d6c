"""Reading weight files (.pth with torch, .safetensors without), downloading torchvision's
published files into a cache with sha256 verification, and saving/restoring converted
variables as flax msgpack (no torch needed)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.errors import CheckpointError, OfflineError
from jaxcnn.pretrained.convert import to_numpy
from jaxcnn.pretrained.torchvision import from_torchvision
from jaxcnn.pretrained.weights import Weights, get_weights

VARIABLES_FILE = "variables.msgpack"
META_FILE = "meta.json"


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where downloads go: `path`, else $JAXCNN_CACHE, else ~/.cache/jaxcnn."""
    if path is not None:
        return Path(path).expanduser()
    return Path(os.environ.get("JAXCNN_CACHE", "~/.cache/jaxcnn")).expanduser()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, prefix: str) -> None:
    """CheckpointError unless the sha256 of `path` starts with `prefix`."""
    digest = _sha256(path)
    if not digest.startswith(prefix):
        raise CheckpointError(
            f"{path} is corrupt or truncated: its sha256 starts with {digest[: len(prefix)]}, "
            f"expected {prefix} (from the published file name). Delete it and download again."
        )


def download(weights: Weights, directory: str | os.PathLike | None = None,
             *, timeout: float = 60.0) -> Path:  # fmt: skip
    """The local copy of `weights` in the cache, downloading it first if needed; the
    sha256 prefix of the file name is checked either way."""
    dest = cache_dir(directory) / weights.filename
    if dest.is_file():
        verify_sha256(dest, weights.sha256_prefix)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    try:
        with urllib.request.urlopen(weights.url, timeout=timeout) as response:
            expected_size = response.headers.get("Content-Length")
            with partial.open("wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
    except (urllib.error.URLError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise OfflineError(
            f"Cannot download {weights.model} weights {weights.name} from {weights.url} "
            f"({getattr(err, 'reason', err)}). Download that file on a machine with network "
            f"access and put it at {dest} (keep the file name; its sha256 prefix is checked), "
            f"or pass the file itself: --weights FILE (jaxcnn predict, similarity, index), "
            f"--from FILE (jaxcnn convert), --config.init.extra.file=FILE (training)."
        ) from err
    if expected_size is not None and partial.stat().st_size != int(expected_size):
        size = partial.stat().st_size
        partial.unlink()
        raise CheckpointError(
            f"Download of {weights.url} is truncated: {size} of {expected_size} bytes. Retry."
        )
    try:
        verify_sha256(partial, weights.sha256_prefix)
    except CheckpointError:
        partial.unlink()
        raise
    partial.replace(dest)
    return dest


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """A state_dict from a .pth/.pt file (needs torch) or a .safetensors file (numpy only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"No weights file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"Cannot read {path} as safetensors: {err}") from err
    if path.suffix in (".pth", ".pt", ".bin"):
        return _read_torch(path)
    raise CheckpointError(
        f"Unknown weights file type {path.suffix!r} ({path}); expected .pth/.pt (PyTorch, "
        f"needs the jaxcnn[torch] extra), .safetensors, or a directory written by "
        f"`jaxcnn convert`."
    )


def _read_torch(path: Path) -> dict[str, Any]:
    try:
        import torch  # only this function needs torch
    except ImportError as err:
        raise CheckpointError(
            f"Reading {path} (a PyTorch .pth file) needs torch, which is not installed. "
            f"Install the extra: pip install 'jaxcnn[torch]', or convert the file to "
            f".safetensors elsewhere."
        ) from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise CheckpointError(f"Cannot read {path} with torch.load: {err}") from err
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict.")
    return dict(state)


def save_variables(variables: Mapping, directory: str | os.PathLike,
                   meta: Mapping[str, Any] | None = None) -> Path:  # fmt: skip
    """Write `variables` to DIR/variables.msgpack (flax msgpack) and `meta` to DIR/meta.json,
    with the sha256 of the msgpack file (checked by `restore_variables`)."""
    from flax import serialization

    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    tree = {k: _numpy_tree(v) for k, v in variables.items()}
    blob = serialization.msgpack_serialize(tree)
    (directory / VARIABLES_FILE).write_bytes(blob)
    meta = {**dict(meta or {}), "sha256": hashlib.sha256(blob).hexdigest()}
    (directory / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return directory


def _numpy_tree(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _numpy_tree(v) for k, v in tree.items()}
    return np.ascontiguousarray(np.asarray(tree))


def restore_variables(path: str | os.PathLike) -> dict:
    """Variables saved by `save_variables` (a directory or its variables.msgpack): a dict
    {"params", "batch_stats"} of finite float32 arrays under string keys, or CheckpointError
    naming the file and what is wrong with it."""
    from flax import serialization

    path = Path(path).expanduser()
    file = path / VARIABLES_FILE if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"No {VARIABLES_FILE} at {path}; write one with `jaxcnn convert`.")
    blob = file.read_bytes()
    expected = _recorded_sha256(file)
    if expected and hashlib.sha256(blob).hexdigest() != expected:
        raise CheckpointError(
            f"{file} does not match the sha256 recorded in {file.parent / META_FILE}: it was "
            "damaged (or replaced) after `jaxcnn convert` wrote it. Convert the weights again."
        )
    try:
        tree = serialization.msgpack_restore(blob)
    except Exception as err:  # msgpack raises several unrelated types on corrupt input
        raise CheckpointError(f"Cannot read {file}: {type(err).__name__}: {err}") from err
    if not isinstance(tree, Mapping) or not isinstance(tree.get("params"), Mapping):
        what = (f"a dict with keys {sorted(map(str, tree))[:6]}" if isinstance(tree, Mapping)
                else f"a {type(tree).__name__}")
        raise CheckpointError(
            f"{file} holds {what}, not the {{'params': ..., 'batch_stats': ...}} dict that "
            "`jaxcnn convert` and save_variables write."
        )
    return {c: _checked_tree(tree.get(c) or {}, f"{file}: {c}") for c in ("params", "batch_stats")}


def _recorded_sha256(file: Path) -> str | None:
    """The sha256 that save_variables wrote beside `file` (None: no meta.json, or an older
    one without it)."""
    meta_file = file.parent / META_FILE
    if file.name != VARIABLES_FILE or not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{meta_file} is damaged ({err}); convert the weights again.") \
            from None
    return meta.get("sha256") if isinstance(meta, dict) else None


def _checked_tree(tree: Any, where: str) -> dict:
    if not isinstance(tree, Mapping):
        return to_numpy(tree, where)
    bad = [k for k in tree if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"{where} has non-string key(s) {bad[:5]}; variables are nested "
                              "dicts of module and parameter names.")
    return {k: _checked_tree(v, f"{where}/{k}") for k, v in tree.items()}


def check_architecture(name: str, variables: Mapping, where: str) -> int | None:
    """CheckpointError unless `variables` fit model `name`: every parameter and statistic
    path present, none extra, every shape equal (up to the head's number of classes, which
    is returned when it differs from the default; else None)."""
    from jaxcnn.pretrained.convert import flatten_tree

    saved = {p: tuple(np.shape(v)) for c in ("params", "batch_stats")
             for p, v in flatten_tree({c: variables.get(c) or {}}).items()}
    wanted = _abstract_shapes(name)
    if saved == wanted:
        return None
    order = lambda p: (not p.startswith("params/"), p)  # parameters are the news
    diff = sorted((p for p in wanted if p in saved and saved[p] != wanted[p]), key=order)
    # A head for another number of classes: one size (a classifier's fc), or a detector's
    # class scores (C) and per-class boxes (4C); the smallest candidate is num_classes.
    if set(saved) == set(wanted) and diff:
        for head in sorted({saved[p][-1] for p in diff})[:1]:
            if _abstract_shapes(name, num_classes=head) == saved:
                return head
    missing = sorted(set(wanted) - set(saved), key=order)
    extra = sorted(set(saved) - set(wanted), key=order)
    lines = [f"{len(missing)} of its {len(wanted)} leaves missing, e.g. "
             + ", ".join(f"{p} {wanted[p]}" for p in missing[:3])] if missing else []
    lines += [f"{len(extra)} leaves it does not have, e.g. "
              + ", ".join(f"{p} {saved[p]}" for p in extra[:3])] if extra else []
    lines += [f"{len(diff)} of another shape, e.g. "
              + ", ".join(f"{p} {saved[p]} (needs {wanted[p]})" for p in diff[:3])] if diff else []
    raise CheckpointError(
        f"the weights at {where} do not fit {name}: " + "; ".join(lines) + ". They belong to "
        "another architecture (or input size): pass the model name they were made for."
    )


def _abstract_shapes(name: str, **overrides: Any) -> dict[str, tuple[int, ...]]:
    from jaxcnn.models import abstract_variables, create_model, get_model_spec
    from jaxcnn.pretrained.convert import flatten_tree
    from jaxcnn.pretrained.torchvision import RULES, abstract_target

    if name in RULES:
        tree = abstract_target(name, **overrides)
    else:
        spec = get_model_spec(name)
        tree = abstract_variables(create_model(name, **overrides), spec.input_shape)
    return {p: tuple(v.shape) for c in ("params", "batch_stats")
            for p, v in flatten_tree({c: tree.get(c) or {}}).items()}


def load(
    name: str,
    weights: str = "IMAGENET1K_V1",
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """jaxcnn variables of model `name` with torchvision's `weights`: from `path` (.pth,
    .safetensors, or a directory from `jaxcnn convert`), else from the cache, downloading the
    published file (sha256-checked) on first use. Offline: OfflineError with the URL and
    the file's expected location."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir() or p.suffix == ".msgpack":
            variables = restore_variables(p)
            check_architecture(name, variables, str(p))
            return variables
        return from_torchvision(name, read_state_dict(p))
    entry = get_weights(name, weights)
    return from_torchvision(name, read_state_dict(download(entry, cache_dir)))

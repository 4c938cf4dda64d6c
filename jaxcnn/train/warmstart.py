"""Warm-starting a run (`config.init.path`): initial variables from torchvision's weights
("torchvision:NAME", through `jaxcnn.pretrained.load`), a training workdir (its best
checkpoint, through `jaxcnn.rundir`) or a flax msgpack file of {"params", "batch_stats"};
`merge_variables` lays them over the freshly initialized model and either fails naming the
first mismatching leaf and both shapes, or (reinit_head) keeps the fresh values for
mismatching leaves, as big_vision's `load` into a fresh init does."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcnn.errors import CheckpointError
from jaxcnn.rundir import RunDir, is_run_dir

TORCHVISION = "torchvision:"


def load_init_variables(path: str, config: Any) -> dict:
    """Variables from "torchvision:NAME" (config.init.extra.weights: the registry tag,
    default IMAGENET1K_V1; config.init.extra.file: a local .pth / .safetensors / converted
    directory), a jaxcnn workdir (its best checkpoint), or a flax msgpack file."""
    if path.startswith(TORCHVISION):
        from jaxcnn.pretrained import load

        extra = config.init.extra
        return load(path[len(TORCHVISION):], extra.get("weights", "IMAGENET1K_V1"),
                    path=extra.get("file") or None)
    p = Path(path).expanduser()
    if p.is_file():
        from jaxcnn.pretrained import restore_variables

        return restore_variables(p)
    if is_run_dir(p) or p.is_dir():
        return RunDir(p).variables()[1]
    raise CheckpointError(
        f"config.init.path={path!r} is neither a file, a jaxcnn workdir nor "
        f"{TORCHVISION}NAME (e.g. {TORCHVISION}resnet18)."
    )


def merge_variables(fresh: dict, loaded: dict, *, reinit_head: bool, where: str) -> dict:
    """`loaded` laid over `fresh` (same tree). A leaf missing or of another shape raises
    CheckpointError naming it and both shapes, unless `reinit_head` keeps the fresh leaf
    (then one log line names the re-initialized leaves, e.g. a new 10-class head)."""
    out, fresh_kept = {}, []
    for collection, tree in fresh.items():
        src = loaded.get(collection, {})

        def pick(path: tuple, leaf: Any, src: Any = src, collection: str = collection) -> Any:
            node = src
            for p in path:
                key = getattr(p, "key", getattr(p, "idx", p))
                if not hasattr(node, "__getitem__") or key not in node:
                    node = None
                    break
                node = node[key]
            name = collection + "/" + "/".join(str(getattr(p, "key", p)) for p in path)
            if node is None or np.shape(node) != np.shape(leaf):
                if reinit_head:
                    got = "missing" if node is None else f"{np.shape(node)}"
                    fresh_kept.append(f"{name} {np.shape(leaf)} (loaded: {got})")
                    return leaf
                got = "missing" if node is None else f"shape {np.shape(node)}"
                raise CheckpointError(
                    f"initial variables {where}: {name!r} is {got} but the model needs shape "
                    f"{np.shape(leaf)} (another architecture or num_classes?). Set "
                    "config.init.reinit_head=True to re-initialize mismatching layers."
                )
            return np.asarray(node, dtype=np.asarray(leaf).dtype)

        out[collection] = jax.tree_util.tree_map_with_path(pick, tree)
    if fresh_kept:
        print(f"init from {where}: weights kept except {len(fresh_kept)} freshly initialized "
              f"leaves (new head): {', '.join(fresh_kept)}", file=sys.stderr, flush=True)
    return out

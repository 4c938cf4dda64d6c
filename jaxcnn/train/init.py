"""Initial variables for a run (`config.init.path`): the seam for transfer learning. A
loader maps a path (or "scheme:name") to a variables dict {"params": ..., "batch_stats":
...}; `merge_variables` checks it against the freshly initialized model and either fails
naming the first mismatching path and both shapes, or (reinit_head) keeps the fresh values
for mismatching leaves. Other packages register schemes, e.g. "torchvision:resnet18", with
`register_init_loader`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcnn.errors import CheckpointError

Loader = Callable[[str, Any], dict]
_LOADERS: dict[str, Loader] = {}


def register_init_loader(scheme: str) -> Callable[[Loader], Loader]:
    """Register `fn(name, config) -> variables` for paths written "scheme:name"."""

    def decorate(fn: Loader) -> Loader:
        _LOADERS[scheme] = fn
        return fn

    return decorate


def load_init_variables(path: str, config: Any) -> dict:
    """Variables from "scheme:name" (a registered loader), a jaxcnn workdir or orbax step
    directory (its best checkpoint), or a flax msgpack file of {"params", "batch_stats"}."""
    scheme, sep, name = path.partition(":")
    if sep and scheme == "torchvision" and scheme not in _LOADERS:
        from jaxcnn.pretrained.transfer import register_loader

        register_loader()
    if sep and scheme in _LOADERS:
        return _LOADERS[scheme](name, config)
    p = Path(path).expanduser()
    if p.is_file():
        from flax import serialization

        return dict(serialization.msgpack_restore(p.read_bytes()))
    if (p / "checkpoints").is_dir() or p.is_dir():
        return _from_workdir(p)
    known = ", ".join(f"{s}:NAME" for s in sorted(_LOADERS)) or "none registered"
    raise CheckpointError(
        f"config.init.path={path!r} is neither a file, a jaxcnn workdir nor a registered "
        f"scheme ({known})."
    )


def _from_workdir(path: Path) -> dict:
    import orbax.checkpoint as ocp

    directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True),
                               item_names=("state", "meta")) as mngr:
        step = mngr.latest_step()
        if step is None:
            raise CheckpointError(f"no checkpoint in {directory} to initialize from.")
        tree = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    state = tree["state"]
    return {"params": state["params"], "batch_stats": state.get("batch_stats", {})}


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

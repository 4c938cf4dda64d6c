"""Warm-starting a run (`config.init.path`): initial variables from torchvision's weights
("torchvision:NAME", through `jaxcnn.pretrained.load`), a training workdir (its best
checkpoint, through `jaxcnn.rundir`) or a flax msgpack file of {"params", "batch_stats"};
`jaxcnn.loading.merge_variables` lays them over the freshly initialized model (big_vision's
`load` into a fresh init)."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxcnn.errors import CheckpointError, ConfigError
from jaxcnn.loading import merge_variables
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


def reinit_layers(fresh: dict, merged: dict, patterns: Sequence[str]) -> dict:
    """`merged` with the top-level modules that fully match one of `patterns` taken back
    from `fresh` (their new initialization) in every collection: replacing more than the
    last layer of a pretrained head (e.g. VGG's `classifier_3` and `classifier_6`).
    ConfigError names a pattern that matches no module, with the modules there are."""
    modules = sorted(fresh.get("params", {}))
    chosen = {m for m in modules for p in patterns if re.fullmatch(p, m)}
    for p in patterns:
        if not any(re.fullmatch(p, m) for m in modules):
            raise ConfigError(f"init.reinit_layers: {p!r} matches no top-level module; the "
                              f"model has {modules}.")
    out = {c: {k: (fresh[c][k] if k in chosen else v) for k, v in tree.items()}
           for c, tree in merged.items()}
    print(f"init: re-initialized {sorted(chosen)} (init.reinit_layers)", file=sys.stderr,
          flush=True)
    return out


__all__ = ["TORCHVISION", "load_init_variables", "merge_variables", "reinit_layers"]

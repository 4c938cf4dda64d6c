"""What the checkpoint digests cost: jaxcnn's Checkpointer (sha256 of every array written into
the checkpoint at save; restore verifies them and checks the parameters are finite) against
plain orbax (the same CheckpointManager items and options, no digests) on a ResNet-50-sized
TrainState (parameters, BatchNorm statistics and SGD momentum: 51.1M float32 values,
205 MB), interleaved rounds in one process.

    python bench/checkpoint_digest.py                 # resnet50, 3 rounds
    python bench/checkpoint_digest.py --model resnet18 --rounds 5

Prints one JSON line per measurement (median seconds over the rounds) and the overhead ratios:
save() call (what an async save blocks training for), save to committed on disk, restore.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _state(model_name: str):
    import jax
    import numpy as np
    import optax

    from jaxcnn.models import abstract_variables, create_model
    from jaxcnn.train import create_state

    shapes = abstract_variables(create_model(model_name), (224, 224, 3))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32), shapes)
    state = create_state(variables, optax.sgd(0.1, 0.9), 0, ("count", "loss"))
    from jaxcnn.data import make_mesh, replicated

    return jax.device_put(state, replicated(make_mesh(jax.devices()[:1])))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    import jax
    import numpy as np
    import orbax.checkpoint as ocp
    from absl import logging

    from jaxcnn.data import make_mesh, replicated
    from jaxcnn.rundir import item_handlers, tree_digests
    from jaxcnn.train import Checkpointer
    from jaxcnn.train.state import state_to_tree

    logging.set_verbosity(logging.ERROR)
    state = _state(args.model)
    tree = state_to_tree(state)
    n_values = sum(int(np.size(x)) for x in jax.tree.leaves(tree))
    nbytes = sum(int(np.asarray(x).nbytes) for x in jax.tree.leaves(tree))
    mesh = make_mesh(jax.devices()[:1])
    rep = replicated(mesh)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), tree)
    times: dict[str, list[float]] = {}
    root = Path(tempfile.mkdtemp(prefix="jaxcnn-digest-bench-"))
    try:
        for r in range(args.rounds):
            for impl in ("orbax", "jaxcnn"):  # interleaved: same load for both
                d = root / f"{impl}-{r}"
                if impl == "orbax":
                    mngr = ocp.CheckpointManager(
                        d / "checkpoints", item_handlers=item_handlers(),
                        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=True))
                    t0 = time.perf_counter()
                    mngr.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                         meta=ocp.args.JsonSave({"step": 1})))
                    t1 = time.perf_counter()
                    mngr.wait_until_finished()
                    t2 = time.perf_counter()
                    restored = mngr.restore(1, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
                    jax.block_until_ready(restored["state"])
                    t3 = time.perf_counter()
                    mngr.close()
                else:
                    ckpt = Checkpointer(d, keep_best=False, async_save=True)
                    t0 = time.perf_counter()
                    ckpt.save(1, state, {"step": 1})
                    t1 = time.perf_counter()
                    ckpt.wait()
                    t2 = time.perf_counter()
                    restored, _ = ckpt.restore(1, state, mesh)
                    jax.block_until_ready(restored)
                    t3 = time.perf_counter()
                    ckpt.close()
                for name, value in (("save_call", t1 - t0), ("save_committed", t2 - t0),
                                    ("restore", t3 - t2)):
                    times.setdefault(f"{impl}_{name}", []).append(value)
            t0 = time.perf_counter()
            tree_digests(jax.device_get(tree))
            times.setdefault("sha256_alone", []).append(time.perf_counter() - t0)
            shutil.rmtree(root / f"orbax-{r}")
            shutil.rmtree(root / f"jaxcnn-{r}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    info = {"model": args.model, "values": n_values, "megabytes": round(nbytes / 2**20, 1),
            "rounds": args.rounds, "device": str(jax.devices()[0]),
            "cpu": platform.processor() or platform.machine(), "jax": jax.__version__,
            "orbax": ocp.__version__}
    print(json.dumps(info))
    for k, v in sorted(med.items()):
        print(json.dumps({"measure": k, "median_seconds": round(v, 3),
                          "all": [round(x, 3) for x in times[k]]}))
    print(json.dumps({
        "overhead_save_call": round(med["jaxcnn_save_call"] / med["orbax_save_call"], 2),
        "overhead_save_committed": round(med["jaxcnn_save_committed"]
                                         / med["orbax_save_committed"], 2),
        "overhead_restore": round(med["jaxcnn_restore"] / med["orbax_restore"], 2),
        "sha256_gb_per_s": round(nbytes / 1e9 / med["sha256_alone"], 2)}))


if __name__ == "__main__":
    main()

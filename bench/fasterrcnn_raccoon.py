"""jaxcnn's `fasterrcnn_resnet18_fpn` against torchvision's FasterRCNN(resnet_fpn_backbone(
"resnet18")) on the raccoon photos, trained side by side on this CPU with the same budget:

- the same data: the VOC source's images resized to S x S (uint8) with their boxes, handed to
  the torch peer as arrays; the model's `fixed_size` is S x S on both sides, so torchvision's
  transform only normalizes;
- the same init: torchvision's freshly initialized weights (seeded), converted with
  `jaxcnn.pretrained.from_torchvision`;
- the same recipe: SGD momentum 0.9, weight decay on every parameter, jaxcnn's warm-up +
  cosine learning rate per step (the peer gets the numbers), batch B, the same image order per
  epoch (`jaxcnn.data.pipeline.train_indices`), horizontal flips with p = 0.5 (each side its
  own draws), the four losses summed, BatchNorm trained (no pretrained backbone), 128 RoIs and
  1000 RPN proposals per image in training;
- interleaved: jaxcnn's epoch k, then torchvision's epoch k, so load changes hit both.

Reported: training images/s per side (steady state: jaxcnn's compile is timed apart), COCO mAP,
mAP@0.5 and VOC AP@0.5 of both on the test split (jaxcnn's `coco_evaluate`, in original
pixels), inference images/s on the test split (eval mode, batch 8, second pass), and the mAP
of a trivial detector (one whole-image box per image) as the floor.

    nice -n 10 python bench/fasterrcnn_raccoon.py --size 256 --epochs 3 \
        --out bench/fasterrcnn_raccoon.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TORCH_PYTHON = os.environ.get("TORCH_PYTHON", "/work/torchvenv/bin/python")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/data/raccoon")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--max-train", type=int, default=0, help="0: all 160 training images")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    return p.parse_args()


def _config(args: argparse.Namespace):
    from configs import raccoon_fasterrcnn

    c = raccoon_fasterrcnn.get_config()
    c.data.path = args.data
    c.data.image_size = args.size
    c.data.batch_size = args.batch
    c.data.eval_batch_size = 8
    c.data.max_examples = args.max_train
    for k in ("min_size", "max_size"):
        c.model.kwargs[k] = args.size
    c.model.kwargs.fixed_size = (args.size, args.size)
    c.num_epochs = args.epochs
    c.optimizer.lr = args.lr
    c.seed = args.seed
    c.progress = False
    return c


def _model_kwargs(c) -> dict:
    keys = ("min_size", "max_size", "fixed_size", "rpn_pre_nms_top_n_train",
            "rpn_post_nms_top_n_train", "box_batch_size_per_image")  # fmt: skip
    return {k: (list(c.model.kwargs[k]) if k == "fixed_size" else c.model.kwargs[k])
            for k in keys}  # fmt: skip


class TorchPeer:
    """bench/torch_fasterrcnn_peer.py in the torch venv, one JSON line per command."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([TORCH_PYTHON, str(ROOT / "bench/torch_fasterrcnn_peer.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"torch peer died on {msg['cmd']}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _scaled(boxes: np.ndarray, size: int, orig: np.ndarray) -> np.ndarray:
    """Boxes on the S x S image mapped to the original (height, width)."""
    h, w = orig
    return boxes * np.array([w / size, h / size, w / size, h / size], np.float32)


def _targets(test, size: int) -> list[dict]:
    a = test.arrays
    return [{"boxes": _scaled(a["boxes"][i][a["box_mask"][i]], size, a["orig_size"][i]),
             "labels": a["box_labels"][i][a["box_mask"][i]] + 1}
            for i in range(len(test))]  # fmt: skip


def _scores(preds: list[dict], targets: list[dict]) -> dict:
    from jaxcnn.detection import coco_evaluate, voc_evaluate

    coco = coco_evaluate(preds, targets)
    return {"map": coco["map"], "map_50": coco["map_50"], "map_75": coco["map_75"],
            "voc_map": voc_evaluate(preds, targets)["map"]}  # fmt: skip


def main() -> None:
    args = _parse()
    import jax

    from jaxcnn.data.pipeline import make_feeder, train_batches, train_indices
    from jaxcnn.data.sources import load_data
    from jaxcnn.detection.detect import unpack
    from jaxcnn.pretrained import from_torchvision, read_state_dict
    from jaxcnn.train.optim import make_optimizer
    from jaxcnn.train.run import initial_state, setup
    from jaxcnn.train.steps import jit_train_step, make_train_step
    from jaxcnn.train.transfer import make_tx_wrap

    config = _config(args)
    splits = load_data(config.data, seed=config.seed)
    train, test = splits.train, splits.test
    n, bs, size = len(train), args.batch, args.size
    spe = n // bs
    tmp = Path(tempfile.mkdtemp(prefix="frcnn_bench_"))
    np.savez(tmp / "data.npz", train_image=train.arrays["image"],
             train_boxes=train.arrays["boxes"], train_labels=train.arrays["box_labels"],
             train_mask=train.arrays["box_mask"], test_image=test.arrays["image"])  # fmt: skip

    peer = TorchPeer()
    kwargs = _model_kwargs(config)
    info = peer(cmd="init", threads=args.threads, seed=args.seed, norm="batch",
                trainable_layers=5, num_classes=splits.num_classes + 1, kwargs=kwargs,
                state_file=str(tmp / "init.safetensors"), data=str(tmp / "data.npz"),
                momentum=config.optimizer.momentum,
                weight_decay=config.optimizer.weight_decay)  # fmt: skip
    init = from_torchvision("fasterrcnn_resnet18_fpn", read_state_dict(tmp / "init.safetensors"),
                            num_classes=splits.num_classes + 1, norm="batch",
                            trainable_backbone_layers=5)  # fmt: skip

    run = setup(config, data=splits, init_variables=init)
    tx, schedule = make_optimizer(config, run.variables["params"], spe,
                                  wrap=make_tx_wrap(config, run.model))  # fmt: skip
    state = initial_state(run, tx)
    train_fn = make_train_step(run.model, run.task, tx, run.augment, spe)
    feeder = make_feeder(train, run.mesh, run.on_device())
    t0 = time.perf_counter()
    compiled = jit_train_step(train_fn, run.mesh).lower(
        state, feeder.batch(train_indices(config.seed, 0, 0, n, bs))).compile()
    compile_seconds = time.perf_counter() - t0

    log: list[dict] = []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        losses = []
        for _, batch in train_batches(feeder, seed=config.seed, epoch=epoch, start_step=0, n=n,
                                      batch_size=bs):
            state, metrics = compiled(state, batch)
            losses.append(metrics["loss"])
        jax.block_until_ready(state)
        jax_seconds = time.perf_counter() - t0
        batches = [train_indices(config.seed, epoch, s, n, bs).tolist() for s in range(spe)]
        lrs = [float(schedule(epoch * spe + s)) for s in range(spe)]
        torch_out = peer(cmd="epoch", batches=batches, lrs=lrs)
        row = {"epoch": epoch + 1, "jax_seconds": jax_seconds,
               "jax_loss": float(np.mean(jax.device_get(losses))),
               "torch_seconds": torch_out["seconds"], "torch_loss": torch_out["loss"],
               "load": os.getloadavg()[0]}  # fmt: skip
        log.append(row)
        print(json.dumps(row), flush=True)
    if int(jax.device_get(state.bad_step)) >= 0:
        raise SystemExit("jaxcnn's run hit a non-finite step")

    # Evaluation and inference speed on the test split (batch 8, eval mode, second pass timed).
    from jaxcnn.detection.detect import run_detector

    model = run.model
    variables = jax.device_get(state.variables)
    images = test.arrays["image"].astype(np.float32)
    mean = np.asarray(config.data.mean, np.float32)
    std = np.asarray(config.data.std, np.float32)
    sizes = np.full((8, 2), size, np.int32)
    jax_times, dets = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        dets = []
        for start in range(0, len(images), 8):
            chunk = (images[start : start + 8] - mean) / std
            chunk = np.pad(chunk, ((0, 8 - len(chunk)), (0, 0), (0, 0), (0, 0)))
            out, _ = run_detector(model, variables, chunk, sizes)
            dets += unpack(out, sizes, sizes)[: len(images) - start]
        jax_times.append(time.perf_counter() - t0)
    torch_eval = peer(cmd="eval", batch_size=8, passes=2, out=str(tmp / "torch_dets.npz"))
    peer.close()
    tdets = np.load(tmp / "torch_dets.npz")
    orig = test.arrays["orig_size"]
    jax_preds = [{**d, "boxes": _scaled(d["boxes"], size, orig[i])} for i, d in enumerate(dets)]
    torch_preds = [{"boxes": _scaled(tdets[f"{i}/boxes"], size, orig[i]),
                    "scores": tdets[f"{i}/scores"], "labels": tdets[f"{i}/labels"]}
                   for i in range(len(images))]  # fmt: skip
    targets = _targets(test, size)
    whole = [{"boxes": np.array([[0, 0, w, h]], np.float32), "scores": np.ones(1, np.float32),
              "labels": np.ones(1, np.int64)} for h, w in orig]  # fmt: skip
    n_test = len(images)
    train_images = args.epochs * spe * bs
    result = {
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {"jax": jax.__version__, "torch": info["torch"]},
        "size": size, "epochs": args.epochs, "batch": bs, "train_images": n,
        "test_images": n_test, "lr": args.lr,
        "jaxcnn": {"train_images_per_s": train_images / sum(r["jax_seconds"] for r in log),
                   "compile_seconds": compile_seconds,
                   "infer_images_per_s": n_test / jax_times[-1],
                   **_scores(jax_preds, targets)},
        "torchvision": {"train_images_per_s": train_images / sum(r["torch_seconds"] for r in log),
                        "infer_images_per_s": n_test / torch_eval["seconds"][-1],
                        **_scores(torch_preds, targets)},
        "whole_image_box": _scores(whole, targets),
        "epochs_log": log,
    }  # fmt: skip
    result["train_ratio_jax_over_torch"] = (result["jaxcnn"]["train_images_per_s"]
                                            / result["torchvision"]["train_images_per_s"])
    result["infer_ratio_jax_over_torch"] = (result["jaxcnn"]["infer_images_per_s"]
                                            / result["torchvision"]["infer_images_per_s"])
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Transfer learning on the real CIFAR-10 JPEGs (data/cifar10/{train,test}/<class>/*.jpg):
a small_cnn is trained here on the five "vehicle + bird/cat/deer" classes 0-4 (source task),
then moved to the disjoint classes 5-9 (dog, frog, horse, ship, truck) with a fresh 5-class
head, comparing: linear probe, fine-tune of the last stage, full fine-tune (discriminative
rates), training from scratch, and the fixed feature extractor (embeddings -> logistic
regression / k-NN). Prints one JSON line per run and writes bench/transfer_cifar10.json.

    .venv/bin/python bench/transfer_cifar10.py --data data/cifar10 --per-class 600
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import default  # noqa: E402
from jaxcnn.data import from_arrays  # noqa: E402
from jaxcnn.similarity.features import extract_embeddings, fit_classifiers  # noqa: E402
from jaxcnn.train import fit, load_init_variables  # noqa: E402

MEAN, STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)


def load_classes(root: Path, split: str, classes: list[str], per_class: int) -> tuple:
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted((root / split / name).glob("*.jpg"))[:per_class]
        images += [np.asarray(Image.open(f).convert("RGB")) for f in files]
        labels += [label] * len(files)
    return np.stack(images), np.asarray(labels, np.int32)


def config_for(args: argparse.Namespace, epochs: int, lr: float) -> object:
    config = default.get_config()
    config.model.name = "small_cnn"
    config.model.kwargs.width = args.width
    config.data.batch_size = 64
    config.data.eval_batch_size = 200
    config.data.mean, config.data.std = MEAN, STD
    config.data.crop_padding = 4
    config.data.flip = True
    config.optimizer.name = "adam"
    config.optimizer.lr = lr
    config.schedule.name = "cosine"
    config.num_epochs = epochs
    config.progress = False
    config.checkpoint.every_steps = 0
    return config


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(ROOT / "data" / "cifar10"))
    p.add_argument("--per-class", type=int, default=600, help="target-task train images/class")
    p.add_argument("--source-per-class", type=int, default=2000)
    p.add_argument("--test-per-class", type=int, default=400)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--probe-lr", type=float, default=3e-2, help="linear probe's peak lr")
    p.add_argument("--workdir", default=None)
    p.add_argument("--runs", default="", help="comma-separated subset of the runs to (re)do, "
                   "reusing WORKDIR/source_pretrain and bench/transfer_cifar10.json")
    args = p.parse_args()
    root = Path(args.data)
    names = sorted(d.name for d in (root / "train").iterdir())
    source, target = names[:5], names[5:]
    t0 = time.perf_counter()
    src = from_arrays(*load_classes(root, "train", source, args.source_per_class),
                      *load_classes(root, "test", source, args.test_per_class),
                      class_names=tuple(source))  # fmt: skip
    tgt_train = load_classes(root, "train", target, args.per_class)
    tgt_test = load_classes(root, "test", target, args.test_per_class)
    tgt = from_arrays(*tgt_train, *tgt_test, class_names=tuple(target))
    print(f"decoded {len(src.train) + len(src.test) + len(tgt.train) + len(tgt.test)} JPEGs in "
          f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="transfer_c10_"))
    results = {"hardware": "2-core CPU sandbox", "devices": jax.device_count(),
               "cpu": platform.processor() or platform.machine(), "model": "small_cnn",
               "width": args.width, "source_classes": source, "target_classes": target,
               "source_train": len(src.train), "target_train": len(tgt.train),
               "target_test": len(tgt.test), "runs": {}}  # fmt: skip

    def run(name: str, config, data, **extra) -> dict:
        t = time.perf_counter()
        out = fit(config, work / name, data=data)
        rec = {"test_accuracy": round(out["test_accuracy"], 4), "epochs": out["epochs"],
               "wall_seconds": round(time.perf_counter() - t, 1),
               "train_seconds": round(out["train_seconds"], 1), **extra}  # fmt: skip
        results["runs"][name] = rec
        print(json.dumps({name: rec}), flush=True)
        return rec

    wanted = set(filter(None, args.runs.split(",")))
    out_file = ROOT / "bench" / "transfer_cifar10.json"
    if wanted and out_file.exists():
        results["runs"] = json.loads(out_file.read_text())["runs"]
    skip = lambda name: bool(wanted) and name not in wanted
    if not skip("source_pretrain"):
        run("source_pretrain", config_for(args, args.epochs, 3e-3), src)
    pretrained = str(work / "source_pretrain")
    for name, freeze, lr, lr_slice in [
        ("linear_probe", "linear_probe", args.probe_lr, ()),
        ("finetune_last_stage", "finetune_last", 1e-3, ()),
        ("full_finetune_discriminative", "full", 1e-3, (1e-4, 1e-3)),
        ("full_finetune", "full", 1e-3, ()),
    ]:
        if skip(name):
            continue
        config = config_for(args, args.epochs, lr)
        config.init.path = pretrained
        config.init.reinit_head = True  # 5 source classes -> fresh 5-class head
        config.transfer.freeze = freeze
        config.transfer.lr_slice = lr_slice
        run(name, config, tgt, freeze=freeze, lr=lr, lr_slice=list(lr_slice))
    if not skip("from_scratch"):
        run("from_scratch", config_for(args, args.epochs, 3e-3), tgt)
    if skip("feature_extractor"):
        out_file.write_text(json.dumps(results, indent=1) + "\n")
        return

    # Fixed feature extractor: pre_logits of the source network, then sklearn.
    from jaxcnn.models import create_model

    t = time.perf_counter()
    model = create_model("small_cnn", width=args.width, num_classes=0)
    variables = load_init_variables(pretrained, None)
    variables = {"params": {k: v for k, v in variables["params"].items() if k != "fc"},
                 "batch_stats": variables["batch_stats"]}
    train_emb = extract_embeddings(model, variables, tgt_train[0], mean=MEAN, std=STD,
                                   out=work / "embeddings_train.npy")
    test_emb = extract_embeddings(model, variables, tgt_test[0], mean=MEAN, std=STD,
                                  out=work / "embeddings_test.npy")
    t_emb = time.perf_counter() - t
    scores = fit_classifiers(train_emb, tgt_train[1], test_emb, tgt_test[1], k=10)
    rec = {"embedding_dim": int(train_emb.shape[1]), "embed_seconds": round(t_emb, 1),
           **{k: round(v, 4) for k, v in scores.items()}}
    results["runs"]["feature_extractor"] = rec
    print(json.dumps({"feature_extractor": rec}), flush=True)
    out_file.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out_file}; workdirs under {work}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()

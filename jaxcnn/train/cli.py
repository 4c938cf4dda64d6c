"""`jaxcnn siamese-eval`: commands that evaluate a training workdir."""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_siamese_eval(args: argparse.Namespace) -> int:
    from jaxcnn.similarity.siamese import evaluate_workdir

    reports = evaluate_workdir(
        args.workdir, classes=tuple(args.classes) if args.classes else None, split=args.split,
        n_ways=tuple(args.n_way), num_pairs=args.pairs, num_episodes=args.episodes,
        seed=args.seed, baseline=not args.no_baseline,
    )
    for name, report in reports.items():
        print(f"{name}:")
        for line in report.lines():
            print(f"  {line}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register the training-workdir subcommands on the `jaxcnn` parser."""
    p = subparsers.add_parser(
        "siamese-eval", help="verification and N-way one-shot accuracy of a siamese workdir",
        description="Evaluate a workdir trained with task=siamese on the classes it did not "
                    "train on (task_kwargs.train_classes), against raw pixels.",
    )
    p.add_argument("workdir")
    p.add_argument("--classes", type=int, nargs="*", default=None,
                   help="labels to evaluate on (default: those not trained on)")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--n-way", type=int, nargs="+", default=[2, 3, 5])
    p.add_argument("--pairs", type=int, default=2000, help="verification pairs")
    p.add_argument("--episodes", type=int, default=2000, help="one-shot episodes per N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="skip the raw-pixel baseline")
    p.set_defaults(func=_cmd_siamese_eval)

"""`jaxcnn train` (also `python -m jaxcnn.train` and the repository's `train.py`) and
`jaxcnn siamese-eval`: the commands that make and evaluate a training workdir.

    jaxcnn train --config digits_lenet --workdir runs/d [--config.optimizer.lr=0.01 ...]
                 [--lr_find] [--eval_only]

`--config` is a config name (`jaxcnn train --config list` prints them; they ship in the
package as `jaxcnn.configs`) or the path of a config file, with an optional `:variant`
(`transfer_resnet18_cifar10:finetune`); `--config.KEY=VALUE` overrides any key, as
ml_collections' config flags do. One JSON line with the results goes to stdout; progress,
start-up phases and warnings go to stderr. Exit codes: see `jaxcnn.cli`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

USAGE = """usage: {prog} --config NAME|PATH[:VARIANT] --workdir DIR [--config.KEY=VALUE ...]
                    [--lr_find] [--eval_only] [--allow_config_change]

Train a jaxcnn model (or, with --lr_find, run the learning-rate finder; with --eval_only,
evaluate the best checkpoint of DIR on the test split). A finished run rerun with the same
command reports its results; an interrupted one resumes from its latest checkpoint.

  --config NAME|PATH[:VARIANT]  a config name ({names}) or a config file
  --workdir DIR                 checkpoints, config.json, run.json, metrics.jsonl, plots
  --config.KEY=VALUE            override a config key, e.g. --config.optimizer.lr=0.01
  --lr_find                     the learning-rate finder instead of training
  --eval_only                   evaluate the best checkpoint instead of training
  --allow_config_change         resume DIR with a config that differs from its config.json
                                (recorded in config_history.jsonl; refused without it)
  --coordinator_address HOST:PORT --num_processes N --process_id I
                                one of N processes of a multi-process run (jax.distributed;
                                detected under SLURM, Open MPI, Cloud TPU)
  --heartbeat_timeout S         a silent process counts as dead after S seconds (20)

Exit codes: 0 done, 1 a jaxcnn error (bad config, data or checkpoint; training stopped),
2 a command-line usage error, 130 interrupted."""


def quiet_logging() -> None:
    """Keep absl/orbax INFO and WARNING lines (orbax logs every file it writes, and warns on
    every step checkpoint saved without validation metrics, by design here) and Python's
    repeated warnings off the console."""
    import warnings

    from absl import logging

    logging.set_verbosity(logging.ERROR)
    logging.use_absl_handler()
    warnings.simplefilter("once")  # once per message and place, not per call


def _pop_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the --config value, the other arguments)."""
    rest, spec = [], None
    args = iter(argv)
    for arg in args:
        if arg in ("--config", "-config"):
            spec = next(args, None)
        elif arg.startswith(("--config=", "-config=")):
            spec = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return spec, rest


def train_main(argv: list[str] | None = None, prog: str = "jaxcnn train") -> int:
    """Parse the flags, run fit / lr_find / evaluate_checkpoint, print one JSON line; return
    the exit code."""
    from absl import flags
    from ml_collections import config_flags

    from jaxcnn.errors import JaxcnnError
    from jaxcnn.train.config import (
        apply_free_form_flags,
        list_configs,
        load_config,
        split_free_form_flags,
    )

    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_logging()

    def fail(err: Exception, code: int = EXIT_ERROR) -> int:
        print(f"{prog}: error: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return code

    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv) or not argv:
        print(USAGE.format(prog=prog, names=", ".join(list_configs())))
        return EXIT_OK if argv else EXIT_USAGE
    spec, rest = _pop_config(argv)
    if spec == "list":
        print("\n".join(list_configs()))
        return EXIT_OK
    if not spec:
        print(f"{prog}: error: --config NAME|PATH is required (configs: "
              f"{', '.join(list_configs())}).", file=sys.stderr)
        return EXIT_USAGE
    try:
        rest, pairs = split_free_form_flags(rest)
        config = load_config(spec)
    except JaxcnnError as err:
        return fail(err)
    fv = flags.FlagValues()
    argv = [prog, *rest]
    try:
        config_flags.DEFINE_config_dict("config", config, "the config", flag_values=fv,
                                        lock_config=True, sys_argv=argv)
        workdir = flags.DEFINE_string("workdir", None, "checkpoints and logs", flag_values=fv)
        find = flags.DEFINE_bool("lr_find", False, "learning-rate finder", flag_values=fv)
        eval_only = flags.DEFINE_bool("eval_only", False, "evaluate only", flag_values=fv)
        allow_change = flags.DEFINE_bool("allow_config_change", False,
                                         "resume with a changed config", flag_values=fv)
        # Multi-process runs (jax.distributed): every process runs the same command with its
        # own --process_id; without the three flags a cluster (SLURM, Open MPI, TPU) is
        # detected, or the run is a single process.
        coordinator = flags.DEFINE_string("coordinator_address", "", "HOST:PORT of process 0",
                                          flag_values=fv)
        num_processes = flags.DEFINE_integer("num_processes", 0, "processes in the run",
                                             flag_values=fv)
        process_id = flags.DEFINE_integer("process_id", -1, "this process's index",
                                          flag_values=fv)
        heartbeat = flags.DEFINE_integer("heartbeat_timeout", 20, "seconds of silence after "
                                         "which a process counts as dead", flag_values=fv)
        fv(argv)
    except AttributeError as err:  # ml_collections: an override of a key the config lacks
        from jaxcnn.errors import ConfigError

        # str(err) is the repr of ml_collections' KeyError text: undo its escapes.
        reason = str(err).strip("'\"").replace("\\n", " ").replace("\\'", "'")
        key = reason.split("'")[1] if reason.count("'") >= 2 else reason.split("'")[0]
        given = [a for a in rest if a.startswith("--config.") and key and key in a]
        return fail(ConfigError(f"unknown config key in {' '.join(given) or rest} ({reason}). "
                                "The keys are listed in jaxcnn/train/config.py."))
    except flags.Error as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not workdir.value:
        print(f"{prog}: error: --workdir DIR is required.", file=sys.stderr)
        return EXIT_USAGE
    config = fv["config"].value
    multi = False
    try:
        from jaxcnn.train.distributed import initialize

        multi = initialize(coordinator.value, num_processes.value, process_id.value,
                           heartbeat_timeout=heartbeat.value)
        apply_free_form_flags(config, pairs)  # --config.model.kwargs.X=... (any X)
        result = _run(config, workdir.value, find.value, eval_only.value, allow_change.value)
    except JaxcnnError as err:
        code = fail(err)
        if multi:
            # jax.distributed's exit waits at a barrier for every process (and aborts when
            # one is gone): leave at once, the error above the last word.
            import os

            sys.stdout.flush()
            os._exit(code)
        return code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume from the latest "
              "checkpoint.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps(result, sort_keys=True), flush=True)
    return EXIT_OK


def _run(config: Any, workdir: str, find: bool, eval_only: bool, allow_change: bool) -> dict:
    from jaxcnn.train import enable_compilation_cache, evaluate_checkpoint, fit, lr_find

    enable_compilation_cache()  # a rerun (resume after preemption) skips XLA compilation
    if find:
        return lr_find(config, workdir)
    if eval_only:
        result = evaluate_checkpoint(config, workdir)
        result.pop("confusion_matrix", None)  # in eval.jsonl; keep stdout to one line
        return result
    return fit(config, workdir, allow_config_change=allow_change)


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
    """Register the training subcommands on the `jaxcnn` parser (`jaxcnn train` itself is
    dispatched to `train_main` before argparse: its --config.KEY flags are absl's)."""
    subparsers.add_parser(
        "train", help="train a model from a config (jaxcnn train --help)", add_help=False)
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

"""The `jaxcnn` command. Each subpackage adds its own subcommands through an
`add_commands(subparsers)` function, listed in COMMAND_MODULES."""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxcnn.errors import JaxcnnError

COMMAND_MODULES: tuple[str, ...] = (
    "jaxcnn.train.cli", "jaxcnn.similarity.cli", "jaxcnn.pretrained.cli", "jaxcnn.data.cli")


def _list_models(args: argparse.Namespace) -> int:
    from jaxcnn.models import get_model_spec, list_models

    if args.summary or args.receptive_field:
        return _model_report(args)
    for name in list_models(args.pattern, task=args.task):
        spec = get_model_spec(name)
        h, w, c = spec.input_shape
        print(f"{name:24s} {spec.family:12s} {spec.task:15s} {h}x{w}x{c}")
    return 0


def _model_report(args: argparse.Namespace) -> int:
    """`jaxcnn models NAME --summary / --receptive-field`: the per-layer tables."""
    from jaxcnn.errors import ConfigError
    from jaxcnn.models import get_model_spec, receptive_field, summary

    if args.pattern is None:
        raise ConfigError("--summary and --receptive-field need a model name, e.g. "
                          "`jaxcnn models alexnet_original --summary`.")  # fmt: skip
    spec = get_model_spec(args.pattern)  # an unknown name lists close matches
    shape = spec.input_shape
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.replace("x", ",").split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3:
            raise ConfigError(f"--input-shape must be H,W,C (e.g. 224,224,3); got "
                              f"{args.input_shape!r}.")  # fmt: skip
    if args.summary:
        print(summary(args.pattern, shape, args.batch_size))
    if args.receptive_field:
        print(receptive_field(args.pattern, shape))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="jaxcnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models = sub.add_parser("models", help="list the registered models")
    models.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'resnet*'")
    models.add_argument("--task", default=None, help="classification, segmentation, ...")
    models.add_argument("--summary", action="store_true",
                        help="per-layer shapes, parameters, memory and MACs of model NAME")
    models.add_argument("--receptive-field", action="store_true",
                        help="per-layer receptive field, jump and start of model NAME")
    models.add_argument("--input-shape", default=None, help="H,W,C (default: the model's)")
    models.add_argument("--batch-size", type=int, default=1, help="for --summary")
    models.set_defaults(func=_list_models)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jaxcnn` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except JaxcnnError as err:
        print(f"jaxcnn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

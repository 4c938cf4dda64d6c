"""The `jaxcnn` command: train models, use their weights, compare and search images.

Each subpackage adds its own subcommands through an `add_commands(subparsers)` function,
listed in COMMAND_MODULES; `jaxcnn train` is `jaxcnn.train.cli.train_main`."""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxcnn.errors import JaxcnnError

COMMAND_MODULES: tuple[str, ...] = (
    "jaxcnn.train.cli", "jaxcnn.similarity.cli", "jaxcnn.pretrained.cli", "jaxcnn.data.cli",
    "jaxcnn.detection.cli")

DESCRIPTION = """\
Classic convolutional networks in JAX/Flax: train them from a config, use torchvision's
ImageNet weights or your own runs, compare and search images by their features."""

EPILOG = """\
examples:
  jaxcnn train --config digits_lenet --workdir runs/d     train LeNet-5 on the digits
  jaxcnn predict cat.jpg --model resnet50 --weights DEFAULT
  jaxcnn predict 3.png --weights runs/d                    a model you trained
  jaxcnn similarity a.jpg b.jpg --model resnet18 --weights DEFAULT
  jaxcnn COMMAND --help                                    the options of one command

--weights, wherever it appears, is a registry tag (DEFAULT, IMAGENET1K_V1), a weight file
(.msgpack, .pth, .safetensors) or `jaxcnn convert` directory, or a training workdir.

exit codes: 0 done; 1 a jaxcnn error (bad input, config, data or weights; training
stopped), the message says what and how to fix it; 2 a command-line usage error; 130
interrupted (Ctrl-C)."""


def _list_models(args: argparse.Namespace) -> int:
    from jaxcnn.loading import list_models
    from jaxcnn.models import get_model_spec

    if args.summary or args.receptive_field:
        return _model_report(args)
    if args.option:
        from jaxcnn.errors import ConfigError

        raise ConfigError("--option sets a model option for --summary / --receptive-field, e.g. "
                          "`jaxcnn models googlenet --summary --option inception_5x5=True`.")
    for name in list_models(args.pattern, task=args.task, pretrained=args.pretrained):
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
    model = args.pattern
    if args.option:  # e.g. activation=prelu, inception_5x5=True
        from jaxcnn.models import create_model

        model = create_model(args.pattern, **_model_options(args.option))
    if args.summary:
        print(summary(model, shape, args.batch_size))
    if args.receptive_field:
        print(receptive_field(model, shape))


def _model_options(items: list[str]) -> dict:
    """{key: value} of KEY=VALUE strings, each value read as the `--config.x=y` flags read
    theirs (`parse_flag_value`)."""
    from jaxcnn.errors import ConfigError
    from jaxcnn.train.config import parse_flag_value

    options = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--option takes KEY=VALUE (e.g. activation=prelu); got {item!r}.")
        options[key] = parse_flag_value(raw)
    return options


def _predict(args: argparse.Namespace) -> int:
    import json

    from jaxcnn.classify import predict
    from jaxcnn.loading import model_of

    results = predict(model_of(args.model, args.weights), list(args.images),
                      weights=args.weights, top_k=args.top_k)
    for image, top in zip(args.images, results, strict=True):
        print(json.dumps({"image": image, f"top{args.top_k}": [[label, round(p, 4)]
                                                               for label, p in top]}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    from jaxcnn import __version__

    parser = argparse.ArgumentParser(
        prog="jaxcnn", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"jaxcnn {__version__}")
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
    models.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a model option for --summary / --receptive-field (repeatable), "
                             "e.g. activation=prelu, inception_5x5=True")
    models.add_argument("--pretrained", action="store_true",
                        help="only models with registered weights")
    models.set_defaults(func=_list_models)
    from jaxcnn.loading import WEIGHTS_HELP

    p = sub.add_parser("predict", help="top-k classes of images, with any weights",
                       description="Classify images with torchvision's weights or a model you "
                                   "trained; one JSON line per image.")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", default=None, help="model name (left out: the workdir's)")
    p.add_argument("--weights", default="DEFAULT", help=WEIGHTS_HELP + " (default DEFAULT)")
    p.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    p.set_defaults(func=_predict)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jaxcnn` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from jaxcnn.train.cli import train_main

        return train_main(argv[1:])
    from jaxcnn.train.cli import EXIT_ERROR, EXIT_INTERRUPTED, quiet_logging

    quiet_logging()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except JaxcnnError as err:
        print(f"jaxcnn {args.command}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"jaxcnn {args.command}: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

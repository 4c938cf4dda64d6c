"""Train a jaxcnn model: python train.py --config configs/digits_lenet.py --workdir DIR
[--config.key=value ...] [--lr_find] [--eval_only]. Thin: parses flags, calls jaxcnn.train."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `from configs import default`

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
_LR_FIND = flags.DEFINE_bool("lr_find", False, "Run the learning-rate finder instead.")
_EVAL_ONLY = flags.DEFINE_bool("eval_only", False, "Evaluate the best checkpoint and exit.")
flags.mark_flags_as_required(["config", "workdir"])
_FREE_FORM: list[tuple[str, str]] = []  # (key, raw value) of --config.model.kwargs.X=... flags


def main(argv: list[str]) -> int:
    """Dispatch to fit / lr_find / evaluate_checkpoint and print one JSON line."""
    del argv
    from absl import logging

    logging.set_verbosity(logging.ERROR)  # orbax logs every file it writes, and warns on
    # each step-interval checkpoint saved without validation metrics (by design here)
    from jaxcnn.errors import JaxcnnError
    from jaxcnn.train import enable_compilation_cache, evaluate_checkpoint, fit, lr_find
    from jaxcnn.train.config import apply_free_form_flags

    enable_compilation_cache()  # a rerun (resume after preemption) skips XLA compilation

    config, workdir = _CONFIG.value, _WORKDIR.value
    try:
        apply_free_form_flags(config, _FREE_FORM)  # --config.model.kwargs.X=... (any X)
        if _LR_FIND.value:
            result = lr_find(config, workdir)
        elif _EVAL_ONLY.value:
            result = evaluate_checkpoint(config, workdir)
            result.pop("confusion_matrix", None)  # in eval.jsonl; keep stdout to one line
        else:
            result = fit(config, workdir)
    except JaxcnnError as err:
        print(f"train.py: error: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with an unknown --config.KEY override reported in one line
    (ml_collections raises a bare AttributeError with a traceback). Free-form keys
    (--config.model.kwargs.X=...) are taken out first and set in main()."""
    from jaxcnn.errors import ConfigError
    from jaxcnn.train.config import split_free_form_flags

    try:
        argv, pairs = split_free_form_flags(argv)
    except ConfigError as err:
        print(f"train.py: error: ConfigError: {err}", file=sys.stderr)
        sys.exit(1)
    _FREE_FORM.extend(pairs)
    sys.argv[:] = argv  # ml_collections reads the overrides from sys.argv itself
    try:
        return app.parse_flags_with_usage(argv)
    except AttributeError as err:
        # str(err) is the repr of ml_collections' KeyError text: undo its escapes.
        reason = str(err).strip("'\"").replace("\\n", " ").replace("\\'", "'")
        key = reason.split("'")[1] if reason.count("'") >= 2 else ""
        given = [a for a in argv[1:] if a.startswith("--config.") and key and key in a]
        print(f"train.py: error: ConfigError: unknown config key in {' '.join(given) or argv[1:]}"
              f" ({reason}). The keys are listed in jaxcnn/train/config.py.", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

"""Train a jaxcnn model: python train.py --config configs/digits_lenet.py --workdir DIR
[--config.key=value ...] [--lr_find] [--eval_only]. Thin: the same as `jaxcnn train`
(jaxcnn.train.cli); `--config` also takes a config name."""

import sys

from jaxcnn.train.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:], prog="train.py"))

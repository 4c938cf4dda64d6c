"""`python -m jaxcnn.train --config NAME --workdir DIR ...`: the same as `jaxcnn train`."""

import sys

from jaxcnn.train.cli import train_main

sys.exit(train_main(sys.argv[1:], prog="python -m jaxcnn.train"))

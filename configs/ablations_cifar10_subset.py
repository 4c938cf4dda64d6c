"""Short ablations of the training choices the course teaches, on a 2,500-image subset of
CIFAR-10 (250 of them held out for validation, the full 10,000-image test split for the
score): small_cnn (width 16, BN) trained 6 epochs, one option changed per run.

The variant is `key=value[,key=value]` after the config path, e.g.
`--config configs/ablations_cifar10_subset.py:act=elu`:
  act=<activation>     (jaxcnn.models.activations: relu, leaky_relu, elu, gelu, tanh, ...)
  init=<initializer>   (jaxcnn.models.initializers: xavier_uniform, he_normal, ...)
  bn=on|off            BatchNorm after every conv (off: the plain network, lr 0.02)
  dropout=<rate>       before each pool and the head
  early_stop=<n>       stop after n epochs without a better valid_loss, in a setting that
                       overfits (25 epochs at most, constant lr 0.02, no augmentation, no
                       weight decay: the validation loss turns up after a few epochs);
                       early_stop=0: all 25
The image folder is --config.data.path=DIR (DIR/train/<class>/*.jpg, DIR/test/...)."""

from . import cifar10_resnet18, default

KEYS = ("act", "init", "bn", "dropout", "early_stop")


def parse(variant: str) -> dict[str, str]:
    """{"act": "elu", ...} from "act=elu,..." ("" or "base": no change)."""
    if variant in ("", "base"):
        return {}
    out = {}
    for part in variant.split(","):
        key, _, value = part.partition("=")
        if key not in KEYS or not value:
            raise ValueError(f"ablation variant parts are key=value with key in {KEYS}; got "
                             f"{part!r}")
        out[key] = value
    return out


def get_config(variant: str = "base"):
    """The base run with the variant's one change."""
    change = parse(variant)
    config = cifar10_resnet18.cifar10_data(default.get_config())
    config.data.source = "folder"
    config.data.max_examples = 2500
    config.data.valid_fraction = 0.1
    config.data.batch_size = 64
    config.data.eval_batch_size = 500
    config.model.name = "small_cnn"
    config.model.kwargs.width = 16
    config.num_epochs = 6
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "cosine"
    config.log_every = 50
    if "act" in change:
        config.model.kwargs.activation = change["act"]
    if "init" in change:
        config.model.kwargs.kernel_init = change["init"]
    if change.get("bn") == "off":
        config.model.kwargs.batch_norm = False
        config.optimizer.lr = 0.02  # the plain network diverges at BN's 0.05
    if "dropout" in change:
        config.model.kwargs.dropout = float(change["dropout"])
    if "early_stop" in change:
        # Overfitting on purpose: with crop + flip, weight decay and cosine annealing this
        # network still improves its validation loss after 30 epochs.
        config.num_epochs = 25
        config.schedule.name = "constant"
        config.optimizer.lr = 0.02
        config.optimizer.weight_decay = 0.0
        config.data.flip = False
        config.data.crop_padding = 0
        config.early_stopping.metric = "valid_loss"
        config.early_stopping.patience = int(change["early_stop"])
    return config

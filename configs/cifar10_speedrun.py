"""airbench94's CIFAR-10 speedrun recipe (Jordan 2024, arXiv:2404.00498; airbench 0.1.8
`lib_airbench94.py` hyp and `utils.py` train), built from jaxcnn's pieces: the airbench94
network with its patch-whitening first layer initialised from 5,000 training images,
label smoothing 0.2, Nesterov SGD with the triangle schedule, BatchNorm biases at 64x the
learning rate, lookahead every 5 steps, reflect translation by 2 pixels with alternating
flips, and mirror + translate test-time augmentation. 9.9 epochs at batch 1024 (476 steps).

    python train.py --config configs/cifar10_speedrun.py --workdir runs/speedrun \\
        --config.data.source=folder --config.data.path=data/cifar10
    python bench/cifar_speedrun.py --runs 5      # timed runs beside airbench94 (GPU)"""

from . import default
from .cifar10_resnet18 import CIFAR10_MEAN, CIFAR10_STD

# airbench94's hyp (lib_airbench94.py lines 27-52), in its own "decoupled" units.
HYP = {"epochs": 9.9, "batch_size": 1024, "lr": 11.5, "momentum": 0.85,
       "weight_decay": 0.0153, "bias_scaler": 64.0, "label_smoothing": 0.2,
       "whiten_bias_epochs": 3, "translate": 2, "tta_level": 2, "whiten_images": 5000}


def get_config():
    """The recipe; optimizer numbers are derived from HYP as airbench's `train` does."""
    config = default.get_config()
    config.data.source = "folder"
    config.data.path = "data/cifar10"
    config.data.channels = 3
    config.data.mean = CIFAR10_MEAN
    config.data.std = CIFAR10_STD
    config.data.crop_padding = HYP["translate"]
    config.data.padding_mode = "reflect"
    config.data.flip = True
    config.data.flip_mode = "alternate"
    config.data.tta = HYP["tta_level"]
    config.data.batch_size = HYP["batch_size"]
    config.data.eval_batch_size = 2000  # airbench evaluates in chunks of 2,000
    config.model.name = "airbench94"
    config.init.data_examples = HYP["whiten_images"]
    config.num_epochs = HYP["epochs"]
    config.bf16 = True
    config.label_smoothing = HYP["label_smoothing"]

    # airbench (utils.py lines 251-271) sums the loss over the batch and runs torch SGD with
    # lr = hyp_lr / kilostep_scale and weight_decay = hyp_wd * batch / kilostep_scale / lr.
    # jaxcnn averages the loss, so its lr is `batch` times larger and its (coupled, torch-style)
    # L2 coefficient `batch` times smaller: the same update.
    m, batch = HYP["momentum"], HYP["batch_size"]
    kilostep_scale = 1024 * (1 + 1 / (1 - m))
    config.optimizer.name = "sgd"
    config.optimizer.momentum = m
    config.optimizer.nesterov = True
    config.optimizer.lr = HYP["lr"] / kilostep_scale * batch
    config.optimizer.weight_decay = HYP["weight_decay"] / HYP["lr"]
    config.optimizer.decay_all = True  # torch's weight_decay covers every parameter
    config.optimizer.groups = {
        # BatchNorm biases: bias_scaler x the rate, the same decay per step (wd / lr_biases).
        "norm_biases": {"pattern": r"/norm\d+/bias$", "lr_scale": HYP["bias_scaler"],
                        "weight_decay_scale": 1 / HYP["bias_scaler"]},
        # The whitening layer: kernel set from the data and never trained; bias trained for
        # the first whiten_bias_epochs epochs (requires_grad = epoch < 3).
        "whiten_kernel": {"pattern": r"^whiten/kernel$", "freeze_after_epochs": 0.0},
        "whiten_bias": {"pattern": r"^whiten/bias$",
                        "freeze_after_epochs": float(HYP["whiten_bias_epochs"])},
    }
    config.schedule.name = "triangle"  # lr_schedule = triangle(steps, 0.2, 0.07, peak=0.23)
    config.schedule.start_factor = 0.2
    config.schedule.pct_start = 0.23
    config.schedule.end_factor = 0.07
    config.lookahead.period = 5  # alpha_schedule = 0.95**5 * (step / total) ** 3
    config.lookahead.base = 0.95**5
    config.lookahead.power = 3.0
    config.checkpoint.keep = 1
    config.log_every = 16
    return config

"""Two-stage transfer of torchvision's ImageNet ResNet-18 to CIFAR-10 (fast.ai's recipe):

    python train.py --config configs/transfer_resnet18_cifar10.py:head --workdir runs/tl_head
    python train.py --config configs/transfer_resnet18_cifar10.py:finetune \\
        --workdir runs/tl_finetune --config.init.path=runs/tl_head

Stage "head": the converted ImageNet weights ("torchvision:resnet18"; offline, download
resnet18-f37072fd.pth into ~/.cache/jaxcnn or pass --config.init.extra.file=FILE) with a
fresh 10-class head; only the head trains (linear probe, frozen BN statistics). Stage
"finetune": resumes from the head stage's checkpoint and unfreezes everything at
discriminative rates slice(3e-5, 3e-4), stem slowest."""

from . import default
from .cifar10_resnet18 import cifar10_data

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def get_config(stage: str = "head"):
    """`stage`: "head" (linear probe, 3 epochs) or "finetune" (all stages, 5 epochs)."""
    config = cifar10_data(default.get_config())
    config.data.mean, config.data.std = IMAGENET_MEAN, IMAGENET_STD  # the weights' own
    config.data.batch_size = 256
    config.model.name = "resnet18"
    config.optimizer.name = "adam"
    config.schedule.name = "cosine"
    config.checkpoint.every_steps = 500
    if stage == "head":
        config.init.path = "torchvision:resnet18"
        config.init.extra.weights = "IMAGENET1K_V1"
        config.transfer.freeze = "linear_probe"
        config.optimizer.lr = 1e-3
        config.num_epochs = 3
    elif stage == "finetune":
        config.init.path = ""  # the head stage's workdir: --config.init.path=runs/tl_head
        config.transfer.freeze = "full"
        config.transfer.lr_slice = (3e-5, 3e-4)
        config.optimizer.lr = 3e-4
        config.num_epochs = 5
    else:
        raise ValueError(f"stage must be 'head' or 'finetune', got {stage!r}")
    return config

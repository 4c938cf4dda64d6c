"""Transfer learning with a NEW HEAD OF SEVERAL LAYERS: torchvision's ImageNet VGG-11 (BN) on
CIFAR-10, its two last fully connected layers (classifier_3, classifier_6) re-initialized
(`init.reinit_layers`), the convolutional stages frozen and the classifier trained
(`transfer.freeze="finetune_last"`: the "fc" group and the head)."""

from . import cifar10_resnet18, default


def get_config():
    """vgg11_bn from torchvision weights at 64x64, classifier_3 and classifier_6 new, SGD
    0.01 momentum 0.9 for 5 epochs with cosine decay."""
    config = cifar10_resnet18.cifar10_data(default.get_config())
    config.model.name = "vgg11_bn"
    config.init.path = "torchvision:vgg11_bn"
    config.init.reinit_layers = ("classifier_3", "classifier_6")
    config.transfer.freeze = "finetune_last"
    config.transfer.last_stages = 1  # the group "fc" (classifier_0, classifier_3) + head
    config.data.image_size = 64
    config.data.mean = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # ImageNet's, as the weights
    config.data.std = (0.229 * 255, 0.224 * 255, 0.225 * 255)
    config.data.batch_size = 128
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.01
    config.optimizer.momentum = 0.9
    config.schedule.name = "cosine"
    config.num_epochs = 5
    config.log_every = 50
    return config

"""AlexNet's own training recipe (Krizhevsky et al., 2012): the paper's network on 256x256
images, random 227x227 crops and their horizontal reflections (section 4.1), SGD with
momentum 0.9 and weight decay 5e-4, the learning rate divided by 10 when the validation
accuracy stops improving (section 5), and the ten-patch test-time evaluation (four corners,
centre, and their reflections, softmax averaged).

By default on CIFAR-10 through tfds upscaled to 256 (--config.data.source=folder
--config.data.path=DIR for an image folder). A full run is GPU work: about 1.1 GFLOP per
227x227 image forward."""

from . import cifar10_resnet18, default


def get_config():
    """alexnet_original, batch 128, lr 0.01, 90 epochs at most with a 10% validation split;
    the plateau cuts the rate after 5 epochs without a better valid_accuracy, early stopping
    ends the run after 15."""
    config = cifar10_resnet18.cifar10_data(default.get_config())
    config.model.name = "alexnet_original"
    config.data.image_size = 256
    config.data.crop_size = 227
    config.data.crop_padding = 0
    config.data.flip = True
    config.data.valid_fraction = 0.1
    config.data.batch_size = 128
    config.data.eval_batch_size = 100
    config.data.ten_crop = True
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "plateau"
    config.schedule.plateau_metric = "valid_accuracy"
    config.schedule.factor = 0.1
    config.schedule.patience = 5
    config.early_stopping.metric = "valid_accuracy"
    config.early_stopping.patience = 15
    config.num_epochs = 90
    config.bf16 = True
    config.log_every = 50
    return config

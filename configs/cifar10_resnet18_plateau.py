"""The ResNet paper's schedule (He et al., 2015, section 3.4: "the learning rate starts from
0.1 and is divided by 10 when the error plateaus") for ResNet-18 on CIFAR-10, the plateau and
early stopping judged on a 5,000-image validation split held out of the training set (as
the paper's CIFAR experiments, section 4.2), never on the test set."""

from . import cifar10_resnet18, default


def get_config():
    """resnet18 (cifar stem), SGD 0.1 momentum 0.9, weight decay 1e-4, batch 128; lr / 10
    after 5 epochs without a better valid_accuracy, stop after 12; at most 100 epochs."""
    config = cifar10_resnet18.cifar10_data(default.get_config())
    config.model.name = "resnet18"
    config.model.kwargs.stem = "cifar"
    config.data.valid_fraction = 0.1
    config.data.batch_size = 128
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "plateau"
    config.schedule.plateau_metric = "valid_accuracy"
    config.schedule.factor = 0.1
    config.schedule.patience = 5
    config.schedule.min_lr = 1e-4
    config.early_stopping.metric = "valid_accuracy"
    config.early_stopping.patience = 12
    config.num_epochs = 100
    config.bf16 = True
    config.log_every = 50
    return config

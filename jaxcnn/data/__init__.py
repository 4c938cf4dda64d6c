"""Data: sources (embedded digits, arrays, image folders, tfds, VOC detection), images and
their host-side transforms (`EvalTransform` for inference), on-device augmentation,
deterministic epoch order and sharding helpers for the data-parallel train step."""

from jaxcnn.data.augment import Augment, augment, cutout, normalize, random_crop, random_flip
from jaxcnn.data.pipeline import (
    DATA_AXIS,
    HostData,
    OnDeviceData,
    batch_sharding,
    check_batch_size,
    epoch_permutation,
    eval_batches,
    make_feeder,
    make_mesh,
    prefetch,
    replicated,
    shard_batch,
    steps_per_epoch,
    train_batches,
    train_indices,
)
from jaxcnn.data.sources import (
    Source,
    Splits,
    from_arrays,
    load_data,
    load_digits,
    load_folder,
    load_npz,
    load_tfds,
)
from jaxcnn.data.transforms import EvalTransform
from jaxcnn.data.voc import load_voc, parse_voc_xml  # registers data.source='voc'

__all__ = [
    "DATA_AXIS",
    "Augment",
    "HostData",
    "OnDeviceData",
    "Source",
    "Splits",
    "EvalTransform",
    "batch_sharding",
    "check_batch_size",
    "augment",
    "cutout",
    "epoch_permutation",
    "eval_batches",
    "from_arrays",
    "load_data",
    "load_digits",
    "load_folder",
    "load_npz",
    "load_tfds",
    "load_voc",
    "make_feeder",
    "make_mesh",
    "normalize",
    "parse_voc_xml",
    "prefetch",
    "random_crop",
    "random_flip",
    "replicated",
    "shard_batch",
    "steps_per_epoch",
    "train_batches",
    "train_indices",
]

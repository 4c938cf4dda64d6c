"""Image similarity and retrieval: the lesson's four metrics, blocked and sharded all-pairs
and top-k search, CNN feature extraction, and Siamese networks for one-shot learning."""

from jaxcnn.similarity.metrics import METRICS, Metric, cosine, get_metric, l1, mse, ncc
from jaxcnn.similarity.search import pairwise, topk

__all__ = [
    "METRICS",
    "Metric",
    "cosine",
    "get_metric",
    "l1",
    "mse",
    "ncc",
    "pairwise",
    "topk",
]

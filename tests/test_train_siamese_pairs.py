"""The learned-similarity siamese task (Koch et al., 2015): balanced BCE, balanced pair
accuracy and recall@1 on a constructed score matrix, padding rows ignored, a clear error for
a model without the head, and a short real training on the digits (slow)."""

import jax
import numpy as np
import optax
import pytest
from train_helpers import tiny_config

import jaxcnn
from jaxcnn.train import fit, get_task

LABELS = np.array([0, 0, 1, 1])
# same-class pairs +2, different -2, except the pair (0, 2) that the head wrongly calls same
SCORES = np.where(LABELS[:, None] == LABELS[None, :], 2.0, -2.0).astype(np.float32)
SCORES[0, 2] = SCORES[2, 0] = 1.0


def _summary(scores, labels, weight=None):
    task = get_task("siamese_pairs", tiny_config())
    batch = {"label": labels}
    if weight is not None:
        batch["weight"] = np.asarray(weight, np.float32)
    sums = jax.jit(task.eval_metrics)(scores, batch)
    return task.summarize({k: float(v) for k, v in sums.items()})


def test_pair_metrics_on_a_constructed_batch():
    s = _summary(SCORES, LABELS)
    # 4 ordered same pairs, all right; 8 different pairs, (0,2) and (2,0) wrong
    assert s["pair_accuracy"] == pytest.approx((4 / 4 + 6 / 8) / 2)
    assert s["recall_at_1"] == 1.0  # each example still scores its own class highest
    bce = lambda x, y: float(optax.sigmoid_binary_cross_entropy(np.float32(x), np.float32(y)))
    pos = bce(2.0, 1.0)
    neg = (6 * bce(-2.0, 0.0) + 2 * bce(1.0, 0.0)) / 8
    assert s["loss"] == pytest.approx((pos + neg) / 2, rel=1e-5)
    # a padding row (weight 0) changes nothing
    padded = np.pad(SCORES, ((0, 1), (0, 1)), constant_values=5.0)
    assert _summary(padded, np.append(LABELS, 0), [1, 1, 1, 1, 0]) == pytest.approx(s)


def test_a_model_without_the_similarity_head_is_explained():
    task = get_task("siamese_pairs", tiny_config())
    with pytest.raises(jaxcnn.ConfigError, match="similarity_head=True"):
        task.loss(np.zeros((4, 8), np.float32), {"label": LABELS})


@pytest.mark.slow
def test_learned_similarity_trains_on_the_digits(tmp_path):
    config = tiny_config("siamese", backbone="lenet5", embedding_dim=32, similarity_head=True)
    config.model.kwargs.backbone_kwargs = {"in_channels": 1}
    config.task = "siamese_pairs"
    config.data.max_examples = 512
    config.optimizer.lr = 2e-3
    config.num_epochs = 4
    config.checkpoint.every_steps = 0
    result = fit(config, tmp_path)
    assert result["best_valid_pair_accuracy"] > 0.75  # chance: 0.5
    assert result["test_recall_at_1"] > 0.5  # chance: ~0.1

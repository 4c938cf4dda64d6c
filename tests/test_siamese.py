"""Siamese networks: samplers, contrastive/triplet losses against hand-computed numbers,
in-batch losses against Python loops, evaluation, the "siamese" task, and a tiny end-to-end
run through the training engine on the digits with held-out classes."""

import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcnn.errors import ConfigError, DatasetError, InputError
from jaxcnn.similarity.siamese import (
    batch_contrastive_loss,
    batch_recall_at_1,
    batch_triplet_loss,
    contrastive_loss,
    evaluate_embeddings,
    one_shot_accuracy,
    one_shot_episodes,
    sample_pairs,
    sample_triplets,
    triplet_loss,
    verification_accuracy,
)

LABELS = np.array([0, 0, 1, 1, 1, 2, 2, 3, 0, 2])


def test_pair_sampler_is_deterministic_balanced_and_valid():
    i, j, same = sample_pairs(LABELS, 200, seed=3)
    i2, j2, same2 = sample_pairs(LABELS, 200, seed=3)
    assert (i == i2).all() and (j == j2).all() and (same == same2).all()
    assert not (i == sample_pairs(LABELS, 200, seed=4)[0]).all()
    assert same.sum() == 100
    np.testing.assert_array_equal(LABELS[i] == LABELS[j], same.astype(bool))
    assert (i[same == 1] != j[same == 1]).all()
    assert 7 in np.concatenate([i, j])  # class 3 (single example) still appears in negatives


def test_triplet_sampler_is_deterministic_and_valid():
    a, p, n = sample_triplets(LABELS, 100, seed=0)
    assert (a == sample_triplets(LABELS, 100, seed=0)[0]).all()
    assert (LABELS[a] == LABELS[p]).all() and (a != p).all() and (LABELS[a] != LABELS[n]).all()
    assert set(LABELS[n]) == {0, 1, 2, 3}
    with pytest.raises(DatasetError, match="two examples"):
        sample_triplets(np.array([0, 1, 2]), 3)


def test_one_shot_episodes_have_one_support_per_class():
    q, s, t = one_shot_episodes(LABELS, 3, 50, seed=1)
    assert s.shape == (50, 3)
    for e in range(50):
        assert len(set(LABELS[s[e]])) == 3
        assert LABELS[s[e, t[e]]] == LABELS[q[e]] and s[e, t[e]] != q[e]
    with pytest.raises(InputError, match="n_way"):
        one_shot_episodes(LABELS, 5, 1)


def test_contrastive_loss_hand_computed():
    d = jnp.array([0.5, 0.5, 2.0, 0.0])
    same = jnp.array([1, 0, 0, 1])
    # same: d^2/2 = 0.125; different: max(0, 1 - 0.5)^2 / 2 = 0.125, beyond margin 0; 0.
    np.testing.assert_allclose(contrastive_loss(d, same, margin=1.0), [0.125, 0.125, 0.0, 0.0])
    np.testing.assert_allclose(contrastive_loss(d, same, margin=3.0)[2], 0.5)


def test_triplet_loss_hand_computed():
    a = jnp.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    p = jnp.array([[3.0, 4.0], [3.0, 4.0], [1.0, 0.0]])
    n = jnp.array([[6.0, 8.0], [0.0, 1.0], [0.0, 2.0]])
    # d(a,p) - d(a,n) + 1: 5 - 10 + 1 -> 0; 5 - 1 + 1 = 5; 1 - 2 + 1 = 0.
    np.testing.assert_allclose(triplet_loss(a, p, n, margin=1.0), [0.0, 5.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(triplet_loss(a, p, n, margin=2.0)[2], 1.0, atol=1e-6)
    assert np.isfinite(jax.grad(lambda x: triplet_loss(x, x, n, 1.0).sum())(a)).all()


EMB = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
LAB = np.array([0, 1, 0, 2, 1, 0])


def _d(i, j):
    return math.dist(EMB[i], EMB[j])


def test_batch_contrastive_loss_equals_a_python_loop():
    pos = [(i, j) for i, j in itertools.permutations(range(6), 2) if LAB[i] == LAB[j]]
    neg = [(i, j) for i, j in itertools.permutations(range(6), 2) if LAB[i] != LAB[j]]
    expected = 0.5 * np.mean([0.5 * _d(i, j) ** 2 for i, j in pos]) + 0.5 * np.mean(
        [0.5 * max(0.0, 1.5 - _d(i, j)) ** 2 for i, j in neg])
    loss, _ = batch_contrastive_loss(jnp.asarray(EMB), jnp.asarray(LAB), margin=1.5)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_batch_triplet_losses_equal_python_loops():
    hard = []
    every = []
    for a in range(6):
        ps = [p for p in range(6) if p != a and LAB[p] == LAB[a]]
        ns = [n for n in range(6) if LAB[n] != LAB[a]]
        if ps:
            hard.append(max(0.0, max(_d(a, p) for p in ps) - min(_d(a, n) for n in ns) + 0.7))
            every += [max(0.0, _d(a, p) - _d(a, n) + 0.7) for p in ps for n in ns]
    got_hard, _ = batch_triplet_loss(jnp.asarray(EMB), jnp.asarray(LAB), margin=0.7)
    got_all, _ = batch_triplet_loss(jnp.asarray(EMB), jnp.asarray(LAB), margin=0.7,
                                    mining="all")
    assert float(got_hard) == pytest.approx(np.mean(hard), rel=1e-5)
    assert float(got_all) == pytest.approx(np.mean([t for t in every if t > 0]), rel=1e-5)


def test_masked_examples_get_no_gradient():
    valid = jnp.array([True, True, True, False, True, True])
    for fn in (batch_contrastive_loss, batch_triplet_loss):
        g = jax.grad(lambda e, fn=fn: fn(e, jnp.asarray(LAB), valid)[0])(jnp.asarray(EMB))
        assert float(jnp.abs(g[3]).max()) == 0.0 and float(jnp.abs(g).max()) > 0.0


def test_batch_recall_at_1():
    emb = jnp.array([[0.0], [0.1], [5.0], [5.2], [9.0]])
    hit, has = batch_recall_at_1(emb, jnp.array([0, 0, 1, 0, 1]))
    np.testing.assert_array_equal(hit, [True, True, False, False, False])
    np.testing.assert_array_equal(has, [True, True, True, True, True])


def test_verification_accuracy_picks_the_best_threshold():
    assert verification_accuracy(np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 1, 0, 0])) == (
        1.0, 0.2)
    acc, thr = verification_accuracy(np.array([0.1, 0.3, 0.2, 0.4]), np.array([1, 1, 0, 0]))
    assert acc == 0.75 and thr == 0.1
    acc, thr = verification_accuracy(np.array([0.5, 0.5, 0.5]), np.array([0, 0, 1]))
    assert acc == pytest.approx(2 / 3) and thr == -np.inf  # ties cannot be split


def test_one_shot_accuracy_perfect_and_chance():
    labels = np.repeat(np.arange(5), 10)
    clustered = np.eye(5, dtype=np.float32)[labels] + 0.01 * np.random.default_rng(0).normal(
        size=(50, 5))
    assert one_shot_accuracy(clustered, labels, 5, 200) == 1.0
    noise = np.random.default_rng(1).normal(size=(50, 8))
    assert abs(one_shot_accuracy(noise, labels, 5, 2000) - 0.2) < 0.05
    report = evaluate_embeddings(clustered, labels, n_ways=(2, 5), num_pairs=200,
                                 num_episodes=100)
    assert report.verification_accuracy == 1.0 and report.one_shot == {2: 1.0, 5: 1.0}


def test_siamese_task_validates_its_options():
    from jaxcnn.train.tasks import get_task

    config = ml_collections.ConfigDict({"task_kwargs": {"loss": "cosface"}})
    with pytest.raises(ConfigError, match="contrastive or triplet"):
        get_task("siamese", config)
    task = get_task("siamese", ml_collections.ConfigDict(
        {"task_kwargs": {"train_classes": (0,)}}))
    batch = {"label": jnp.array([0, 0, 1, 1]), "weight": jnp.array([1.0, 1.0, 1.0, 0.0])}
    out = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.0, 1.0]])
    sums = task.eval_metrics(out, batch)
    # class 1 is held out; its only other example is padding, so no held-out anchor counts
    assert float(sums["count"]) == 2.0 and float(sums["recall_at_1"]) == 2.0
    assert float(sums["heldout_count"]) == 0.0


@pytest.mark.slow
def test_siamese_digits_config_trains_end_to_end_and_evaluates_held_out_classes(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from configs import siamese_digits
    from jaxcnn.similarity.siamese import evaluate_workdir
    from jaxcnn.train import fit

    config = siamese_digits.get_config()
    config.data.max_examples = 256
    config.data.batch_size = 64
    config.num_epochs = 1
    config.progress = False
    result = fit(config, tmp_path / "run")
    assert 0.0 <= result["test_recall_at_1"] <= 1.0 and "test_heldout_recall_at_1" in result
    reports = evaluate_workdir(str(tmp_path / "run"), n_ways=(2, 3), num_pairs=100,
                               num_episodes=100)
    assert set(reports) == {"siamese", "raw_pixels"}
    assert 0.0 <= reports["siamese"].one_shot[3] <= 1.0

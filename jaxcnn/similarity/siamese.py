"""Siamese networks for one-shot learning: samplers, losses and evaluation.

- Samplers (host-side numpy, deterministic given a seed) over the labels of any dataset:
  `sample_pairs` (balanced same/different pairs), `sample_triplets` (anchor, positive,
  negative) and `one_shot_episodes` (N-way one-shot trials).
- Losses on embeddings (pure, jittable): `contrastive_loss` (Hadsell, Chopra & LeCun, 2006),
  `triplet_loss` (as torch.nn.TripletMarginLoss, p=2), and their in-batch forms over every
  pair / the hardest triplets of a labelled batch (`batch_contrastive_loss`,
  `batch_triplet_loss`, Hermans et al. 2017), which the training engine's "siamese" task uses.
- Evaluation: `verification_accuracy` at the best distance threshold and
  `one_shot_accuracy` (nearest support image among N classes never seen in training).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.errors import DatasetError, InputError

# ----------------------------------------------------------------------------- samplers


def _class_index(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise DatasetError(f"samplers need a non-empty 1-D label array; got shape {labels.shape}.")
    classes = np.unique(labels)
    return classes, [np.flatnonzero(labels == c) for c in classes]


def sample_pairs(labels: np.ndarray, num_pairs: int, seed: int = 0,
                 positive_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(i, j, same)`: `num_pairs` index pairs into `labels`, a `positive_fraction` of them of
    one class (i != j), the rest of two different classes chosen uniformly; shuffled.
    Classes with a single example cannot give positives and are skipped for those."""
    classes, members = _class_index(labels)
    rng = np.random.default_rng(seed)
    multi = [m for m in members if len(m) >= 2]
    n_pos = int(round(num_pairs * positive_fraction))
    if n_pos and not multi:
        raise DatasetError("no class has two examples: same-class pairs are impossible.")
    if num_pairs - n_pos and len(classes) < 2:
        raise DatasetError("one class only: different-class pairs are impossible.")
    first, second = [], []
    for _ in range(n_pos):
        m = multi[rng.integers(len(multi))]
        a, b = rng.choice(len(m), 2, replace=False)
        first.append(m[a])
        second.append(m[b])
    for _ in range(num_pairs - n_pos):
        ca, cb = rng.choice(len(classes), 2, replace=False)
        first.append(members[ca][rng.integers(len(members[ca]))])
        second.append(members[cb][rng.integers(len(members[cb]))])
    same = np.array([1] * n_pos + [0] * (num_pairs - n_pos), np.int32)
    order = rng.permutation(num_pairs)
    return (np.array(first, np.int64)[order], np.array(second, np.int64)[order], same[order])


def sample_triplets(labels: np.ndarray, num_triplets: int, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(anchor, positive, negative)` index arrays: positive of the anchor's class (another
    example), negative of another class."""
    classes, members = _class_index(labels)
    multi = [k for k, m in enumerate(members) if len(m) >= 2]
    if not multi or len(classes) < 2:
        raise DatasetError("triplets need a class with two examples and at least two classes.")
    rng = np.random.default_rng(seed)
    out = np.empty((3, num_triplets), np.int64)
    for t in range(num_triplets):
        k = multi[rng.integers(len(multi))]
        a, p = rng.choice(len(members[k]), 2, replace=False)
        other = rng.integers(len(classes) - 1)
        other += other >= k  # uniform over the other classes
        out[:, t] = members[k][a], members[k][p], members[other][rng.integers(len(members[other]))]
    return out[0], out[1], out[2]


def one_shot_episodes(labels: np.ndarray, n_way: int, num_episodes: int, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(query [E], support [E, n_way], target [E])` for N-way one-shot trials: n_way
    distinct classes, one support example each, and a query of class `target` (another
    example than its support). Correct when the query's nearest support is `target`."""
    classes, members = _class_index(labels)
    usable = [k for k, m in enumerate(members) if len(m) >= 2]
    if n_way < 2 or n_way > len(classes):
        raise InputError(
            f"n_way must be between 2 and the number of classes ({len(classes)}); got {n_way}."
        )
    if not usable:
        raise DatasetError("one-shot trials need a class with at least two examples.")
    rng = np.random.default_rng(seed)
    query = np.empty(num_episodes, np.int64)
    support = np.empty((num_episodes, n_way), np.int64)
    target = np.empty(num_episodes, np.int64)
    for e in range(num_episodes):
        k = usable[rng.integers(len(usable))]
        rest = np.array([c for c in range(len(classes)) if c != k])
        ways = np.concatenate([[k], rng.choice(rest, n_way - 1, replace=False)])
        ways = rng.permutation(ways)
        q, s = rng.choice(len(members[k]), 2, replace=False)
        query[e] = members[k][q]
        for w, c in enumerate(ways):
            support[e, w] = members[k][s] if c == k else members[c][rng.integers(len(members[c]))]
        target[e] = int(np.flatnonzero(ways == k)[0])
    return query, support, target


# ----------------------------------------------------------------------------- losses


def euclidean(a: jax.Array, b: jax.Array) -> jax.Array:
    """||a - b||_2 over the last axis, with a finite gradient at a == b."""
    sq = jnp.sum(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=-1)
    return jnp.sqrt(jnp.maximum(sq, 1e-12))


def contrastive_loss(distance: jax.Array, same: jax.Array, margin: float = 1.0) -> jax.Array:
    """Per-pair contrastive loss (Hadsell et al., 2006, eq. 4): same-class pairs are pulled
    together, 1/2 d^2; different-class pairs are pushed beyond the margin, 1/2 max(0, m - d)^2."""
    same = same.astype(jnp.float32)
    d = distance.astype(jnp.float32)
    return 0.5 * same * jnp.square(d) + 0.5 * (1.0 - same) * jnp.square(
        jnp.maximum(margin - d, 0.0))


def triplet_loss(anchor: jax.Array, positive: jax.Array, negative: jax.Array,
                 margin: float = 1.0) -> jax.Array:
    """Per-triplet max(0, ||a - p|| - ||a - n|| + margin), torch.nn.TripletMarginLoss's
    formula with p=2 (reduction="none")."""
    return jnp.maximum(euclidean(anchor, positive) - euclidean(anchor, negative) + margin, 0.0)


def pairwise_distances(emb: jax.Array) -> jax.Array:
    """Euclidean distance matrix [B, B] of a batch of embeddings [B, E]."""
    return euclidean(emb[:, None, :], emb[None, :, :])


def _pair_masks(labels: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    valid = valid.astype(bool)
    both = valid[:, None] & valid[None, :] & ~jnp.eye(labels.shape[0], dtype=bool)
    same = labels[:, None] == labels[None, :]
    return both & same, both & ~same


def batch_contrastive_loss(emb: jax.Array, labels: jax.Array, valid: jax.Array | None = None,
                           margin: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """Contrastive loss over every ordered pair of a labelled batch, balanced so that
    same-class and different-class pairs weigh one half each (a batch of 7+ classes has ~6x
    more negatives). Returns `(loss, per_anchor)`: the scalar loss and each anchor's own
    balanced loss (0 for anchors without a positive or a negative); `valid` masks padding."""
    valid = jnp.ones(labels.shape, bool) if valid is None else valid.astype(bool)
    pos, neg = _pair_masks(labels, valid)
    per_pair = contrastive_loss(pairwise_distances(emb), pos, margin)
    mean_over = lambda mask, axis=None: jnp.sum(jnp.where(mask, per_pair, 0.0), axis=axis) / (
        jnp.maximum(jnp.sum(mask, axis=axis), 1))
    loss = 0.5 * mean_over(pos) + 0.5 * mean_over(neg)
    per_anchor = 0.5 * mean_over(pos, 1) + 0.5 * mean_over(neg, 1)
    return loss, per_anchor


def batch_triplet_loss(emb: jax.Array, labels: jax.Array, valid: jax.Array | None = None,
                       margin: float = 1.0, mining: str = "hard") -> tuple[jax.Array, jax.Array]:
    """Triplet loss over a labelled batch (Hermans, Beyer & Leibe, 2017). mining="hard": each
    anchor with its farthest positive and nearest negative; "all": the mean over all valid
    triplets with a positive loss. Returns `(loss, per_anchor)` as batch_contrastive_loss."""
    valid = jnp.ones(labels.shape, bool) if valid is None else valid.astype(bool)
    pos, neg = _pair_masks(labels, valid)
    d = pairwise_distances(emb)
    has = jnp.any(pos, 1) & jnp.any(neg, 1)
    if mining == "hard":
        hardest_pos = jnp.max(jnp.where(pos, d, -jnp.inf), axis=1)
        hardest_neg = jnp.min(jnp.where(neg, d, jnp.inf), axis=1)
        per_anchor = jnp.where(has, jnp.maximum(hardest_pos - hardest_neg + margin, 0.0), 0.0)
        return jnp.sum(per_anchor) / jnp.maximum(jnp.sum(has), 1), per_anchor
    if mining != "all":
        raise InputError(f"triplet mining must be 'hard' or 'all'; got {mining!r}.")
    t = jnp.maximum(d[:, :, None] - d[:, None, :] + margin, 0.0)  # [anchor, pos, neg]
    mask = pos[:, :, None] & neg[:, None, :]
    active = mask & (t > 1e-12)
    per_anchor = jnp.sum(jnp.where(mask, t, 0.0), (1, 2)) / jnp.maximum(jnp.sum(mask, (1, 2)), 1)
    loss = jnp.sum(jnp.where(active, t, 0.0)) / jnp.maximum(jnp.sum(active), 1)
    return loss, per_anchor


def batch_recall_at_1(emb: jax.Array, labels: jax.Array, valid: jax.Array | None = None
                      ) -> tuple[jax.Array, jax.Array]:
    """`(hit, has_positive)` per anchor: whether its nearest other valid example in the
    batch has its label, and whether the batch holds any example of its label."""
    valid = jnp.ones(labels.shape, bool) if valid is None else valid.astype(bool)
    pos, neg = _pair_masks(labels, valid)
    d = jnp.where(pos | neg, pairwise_distances(emb), jnp.inf)
    nearest = jnp.argmin(d, axis=1)
    hit = (labels[nearest] == labels) & valid
    return hit, jnp.any(pos, 1)


# ----------------------------------------------------------------------------- evaluation


def verification_accuracy(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """`(accuracy, threshold)`: the best accuracy of "same class iff distance <= threshold"
    over all thresholds (an exact sweep over the sorted distances)."""
    d = np.asarray(distances, np.float64)
    y = np.asarray(same).astype(bool)
    if d.shape != y.shape or d.ndim != 1 or d.size == 0:
        raise InputError(f"need equal 1-D distances and labels; got {d.shape} and {y.shape}.")
    order = np.argsort(d, kind="stable")
    d, y = d[order], y[order]
    # Threshold below everything: all "different"; then admit one distinct value at a time.
    correct = np.concatenate([[np.sum(~y)], np.sum(~y) + np.cumsum(np.where(y, 1, -1))])
    last_of_value = np.concatenate([np.flatnonzero(np.diff(d) > 0), [len(d) - 1]])
    candidates = np.concatenate([[0], last_of_value + 1])
    best = candidates[np.argmax(correct[candidates])]
    threshold = -np.inf if best == 0 else float(d[best - 1])
    return float(correct[best] / len(d)), threshold


def one_shot_accuracy(embeddings: np.ndarray, labels: np.ndarray, n_way: int,
                      num_episodes: int = 1000, seed: int = 0) -> float:
    """Fraction of N-way one-shot episodes whose query is nearest (Euclidean) to the support
    example of its own class."""
    emb = np.asarray(embeddings, np.float32)
    query, support, target = one_shot_episodes(labels, n_way, num_episodes, seed)
    d = np.linalg.norm(emb[support] - emb[query][:, None, :], axis=-1)  # [E, n_way]
    return float(np.mean(np.argmin(d, axis=1) == target))


@dataclasses.dataclass
class SiameseReport:
    """Evaluation of an embedding on a labelled set (e.g. classes held out from training)."""

    verification_accuracy: float
    threshold: float
    one_shot: dict[int, float]  # n_way -> accuracy
    num_pairs: int
    num_episodes: int

    def lines(self) -> list[str]:
        """Human-readable summary."""
        out = [f"verification accuracy {self.verification_accuracy:.4f} at distance <= "
               f"{self.threshold:.4g} ({self.num_pairs} balanced pairs)"]
        out += [f"{n}-way one-shot accuracy {acc:.4f} (chance {1 / n:.3f}, "
                f"{self.num_episodes} episodes)" for n, acc in sorted(self.one_shot.items())]
        return out


def evaluate_embeddings(embeddings: np.ndarray, labels: np.ndarray, *, n_ways: tuple[int, ...]
                        = (2, 3), num_pairs: int = 2000, num_episodes: int = 2000,
                        seed: int = 0) -> SiameseReport:
    """Verification accuracy (best threshold, balanced pairs) and N-way one-shot accuracies of
    `embeddings` [N, E] with `labels` [N]; deterministic given `seed`."""
    emb = np.asarray(embeddings, np.float32)
    i, j, same = sample_pairs(labels, num_pairs, seed)
    acc, thr = verification_accuracy(np.linalg.norm(emb[i] - emb[j], axis=-1), same)
    n_classes = len(np.unique(labels))
    shots = {n: one_shot_accuracy(emb, labels, n, num_episodes, seed + n)
             for n in n_ways if n <= n_classes}
    return SiameseReport(acc, thr, shots, num_pairs, num_episodes)


def evaluate_workdir(workdir: str, *, classes: tuple[int, ...] | None = None,
                     split: str = "test", n_ways: tuple[int, ...] = (2, 3, 5),
                     num_pairs: int = 2000, num_episodes: int = 2000, seed: int = 0,
                     baseline: bool = True) -> dict[str, SiameseReport]:
    """Evaluate a siamese training workdir on `classes` of its dataset's `split` (default:
    the classes it did not train on, task_kwargs.train_classes), with the run's own
    preprocessing; `baseline` adds the same evaluation on raw pixels."""
    from jaxcnn.data import load_data
    from jaxcnn.rundir import RunDir
    from jaxcnn.similarity.features import FeatureExtractor, output_layer

    run = RunDir(workdir)
    config, name = run.config(), run.info()["model"]
    splits = load_data(config["data"], seed=int(config.get("seed", 0)))
    source = getattr(splits, split)
    labels = np.asarray(source.arrays["label"])
    if classes is None:
        trained = tuple(config.get("task_kwargs", {}).get("train_classes", ()) or ())
        classes = tuple(int(c) for c in np.unique(labels) if c not in trained)
    keep = np.isin(labels, classes)
    if not keep.any():
        raise DatasetError(f"no {split} examples of classes {classes} in {splits.name}.")
    images = np.asarray(source.arrays["image"])[keep]
    labels = labels[keep]
    # What the task trained: the model's output, i.e. "logits" of a classifier used as an
    # embedding head, or the "embedding" of a model without a features dict.
    ext = FeatureExtractor(name, weights=workdir, layer=output_layer(name))
    emb = ext.embed_dataset(images)
    if config.get("task_kwargs", {}).get("normalize", True):
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    reports = {"siamese": evaluate_embeddings(emb, labels, n_ways=n_ways, num_pairs=num_pairs,
                                              num_episodes=num_episodes, seed=seed)}
    if baseline:
        raw = images.reshape(len(images), -1).astype(np.float32) / 255.0
        raw = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
        reports["raw_pixels"] = evaluate_embeddings(raw, labels, n_ways=n_ways,
                                                    num_pairs=num_pairs,
                                                    num_episodes=num_episodes, seed=seed)
    return reports

"""The offline similarity demo: scikit-image's bundled photos plus three transformed copies of
the cat `chelsea` (mirrored, cropped, brightened). Ranked against the original cat, a good
similarity measure puts the three copies above every other photo."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxcnn.data.images import load_image
from jaxcnn.similarity.metrics import METRICS
from jaxcnn.similarity.search import pairwise

QUERY = "chelsea"
TRANSFORMED = ("chelsea_flipped", "chelsea_cropped", "chelsea_brighter")
OTHERS = ("coffee", "astronaut", "rocket", "camera", "coins", "moon", "motorcycle",
          "hubble_deep_field", "immunohistochemistry")


def demo_images() -> dict[str, np.ndarray]:
    """{name: uint8 RGB image}: the cat, its transformed copies, then the other photos."""
    from skimage import data

    cat = load_image(data.chelsea())
    h, w = cat.shape[:2]
    images = {
        QUERY: cat,
        "chelsea_flipped": cat[:, ::-1],
        # the central 80%: what a crop-and-resize augmentation or a closer shot looks like
        "chelsea_cropped": cat[h // 10:h - h // 10, w // 10:w - w // 10],
        "chelsea_brighter": np.clip(cat.astype(np.int16) + 50, 0, 255).astype(np.uint8),
    }
    for name in OTHERS:
        fn = "stereo_motorcycle" if name == "motorcycle" else name
        img = getattr(data, fn)()
        images[name] = load_image(img[0] if name == "motorcycle" else img)
    return images


def rank_embeddings(emb: np.ndarray, names: list[str]) -> dict[str, list[tuple[str, float]]]:
    """For each metric, names[1:] ranked by similarity of their embeddings to emb[0] (the
    query), best first, with scores."""
    emb = np.asarray(emb, np.float32)
    out = {}
    for name, metric in METRICS.items():
        scores = np.asarray(pairwise(emb[:1], emb[1:], name))[0]
        order = np.argsort(-scores if metric.higher_is_better else scores, kind="stable")
        out[name] = [(names[1 + i], float(scores[i])) for i in order]
    return out


def rank_against_query(
    embed: Callable[[list[np.ndarray]], np.ndarray], images: dict[str, np.ndarray] | None = None
) -> dict[str, list[tuple[str, float]]]:
    """`rank_embeddings` of the demo images (or `images`, query first) embedded by `embed`."""
    images = demo_images() if images is None else images
    return rank_embeddings(embed(list(images.values())), list(images))


def transformed_on_top(ranking: list[tuple[str, float]]) -> bool:
    """Whether the three transformed cats are the top three of a ranking."""
    return {name for name, _ in ranking[:len(TRANSFORMED)]} == set(TRANSFORMED)

"""The in-memory folder source at scale: `data.max_examples` picks its subset from the file
list BEFORE decoding (10,000 of 60,000 files decode 10,000), and a split whose every image is
unreadable fails when the data loads, naming the folder and a file (not after an epoch), also
when the folder is streamed by the host pipeline."""

from __future__ import annotations

import pytest
from image_tree import make_tree

from jaxcnn.data import sources
from jaxcnn.data.sources import load_data, load_folder, subset_indices
from jaxcnn.errors import DatasetError


def test_max_examples_subsets_the_file_list_before_decoding(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "tree", n_train=10, n_test=2)
    decoded = []
    real = sources._decode
    monkeypatch.setattr(sources, "_decode", lambda path, *a: decoded.append(path) or real(path, *a))
    splits = load_data({"source": "folder", "path": str(root), "max_examples": 7,
                        "cache_dir": str(tmp_path / "cache")}, seed=3)
    assert len(splits.train) == 7 and len(splits.test) == 6
    assert len(decoded) == 7 + 6  # not the 30 training files
    chosen = sorted(p for p in decoded if "/train/" in str(p))
    all_train = sorted((root / "train").rglob("*.jpg"))
    assert chosen == [all_train[i] for i in subset_indices(30, 7, 3)]
    assert len({p.parent.name for p in chosen}) > 1  # a random subset, not the first class


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_image_of_a_split_unreadable_fails_at_load_naming_it(tmp_path, split):
    root = make_tree(tmp_path / "tree", n_train=2, n_test=2)
    for f in (root / split).rglob("*.jpg"):
        f.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError, match=rf"no readable image in .*{split}: all 6 .*\.jpg"):
        load_folder(str(root), cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_streamed_split_whose_images_are_unreadable_fails_at_load_naming_a_file(tmp_path,
                                                                                 split):
    root = make_tree(tmp_path / "tree", n_train=2, n_test=2)
    for f in (root / split).rglob("*.jpg"):
        f.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError, match=rf"cannot decode image file .*{split}/ant/000\.jpg"
                                           r".*jaxcnn prepare"):
        load_data({"source": "folder", "path": str(root), "on_device": "off",
                   "image_size": 8})

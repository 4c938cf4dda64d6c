"""Data sources: the embedded digits split (sizes, determinism, stratification), the epoch
order as a pure function of (seed, epoch), image folders decoded once into a cache (with
unreadable, non-image, grayscale files and inconsistent trees), host vs on-device batches,
and tfds failing offline with a message naming the dataset, the directory and the fix."""

import numpy as np
import pytest
from PIL import Image

from jaxcnn.data import (
    HostData,
    OnDeviceData,
    epoch_permutation,
    from_arrays,
    load_digits,
    load_folder,
    load_tfds,
    make_mesh,
    train_indices,
)
from jaxcnn.data import sources as sources_mod
from jaxcnn.errors import DatasetError, OfflineError


def test_digits_fixed_stratified_split():
    a, b = load_digits(), load_digits()
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert a.train.image_shape == (32, 32, 1) and a.train.arrays["image"].dtype == np.uint8
    np.testing.assert_array_equal(a.test.arrays["image"], b.test.arrays["image"])
    np.testing.assert_array_equal(a.train.arrays["label"], b.train.arrays["label"])
    counts = np.bincount(a.test.arrays["label"], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37 and counts.sum() == 360
    assert a.num_classes == 10 and a.valid is a.test
    # the 2-pixel MNIST-style margin is empty, the digit itself is bright
    img = a.train.arrays["image"][0, ..., 0]
    assert img[:2].max() == 0 and img[:, :2].max() == 0 and img.max() > 200
    carved = load_digits(valid_fraction=0.1)
    assert (len(carved.train), len(carved.valid)) == (1293, 144)


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    p = epoch_permutation(3, 7, 100)
    np.testing.assert_array_equal(p, epoch_permutation(3, 7, 100))
    assert sorted(p) == list(range(100))
    assert not np.array_equal(p, epoch_permutation(3, 8, 100))
    assert not np.array_equal(p, epoch_permutation(4, 7, 100))
    np.testing.assert_array_equal(train_indices(3, 7, 2, 100, 16), p[32:48])


def test_host_and_on_device_batches_agree_and_are_sharded():
    splits = from_arrays(np.arange(16 * 4 * 4 * 3).reshape(16, 4, 4, 3) % 256,
                         np.arange(16) % 3, np.zeros((4, 4, 4, 3)), np.zeros(4))
    mesh = make_mesh()
    idx = np.array([5, 1, 9, 12, 0, 3, 7, 2])
    host, dev = HostData(splits.train, mesh).batch(idx), OnDeviceData(splits.train, mesh).batch(idx)
    for key in ("image", "label"):
        np.testing.assert_array_equal(np.asarray(host[key]), np.asarray(dev[key]))
        np.testing.assert_array_equal(np.asarray(host[key]), splits.train.arrays[key][idx])
        assert len(host[key].sharding.device_set) == 4


def test_from_arrays_rejects_out_of_range_and_nan_pixels():
    with pytest.raises(DatasetError, match="range"):
        from_arrays(np.full((2, 4, 4), 300.0), None, np.zeros((2, 4, 4)), None)
    bad = np.zeros((3, 4, 4), np.float32)
    bad[1, 2, 2] = np.nan
    with pytest.raises(DatasetError, match="image 1 holds NaN"):
        from_arrays(bad, None, np.zeros((2, 4, 4)), None)


def _tree(root, classes=("cat", "dog"), n=3, size=8):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                pixels = np.full((size, size, 3), 40 + 100 * c, np.uint8) + rng.integers(
                    0, 10, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{i}.jpg", quality=95)
    return root


def test_folder_source_decodes_once_into_a_cache(tmp_path, monkeypatch):
    root = _tree(tmp_path / "imgs")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(root / "train" / "dog" / "gray.png")
    with pytest.warns(UserWarning, match="converted 1 image"):
        splits = load_folder(str(root), cache_dir=str(tmp_path / "cache"))
    assert splits.class_names == ("cat", "dog")
    assert (len(splits.train), len(splits.test)) == (7, 6)
    assert splits.train.image_shape == (8, 8, 3)
    labels = splits.train.arrays["label"]
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 1])
    cat = splits.train.arrays["image"][labels == 0].mean()
    dog = splits.train.arrays["image"][:6][labels[:6] == 1].mean()
    assert cat < 60 < 130 < dog  # colours survived the JPEG round trip
    # a second load reads the cache and decodes nothing
    monkeypatch.setattr(sources_mod, "_decode", lambda *a: pytest.fail("decoded again"))
    again = load_folder(str(root), cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(again.train.arrays["image"], splits.train.arrays["image"])


def test_folder_source_resizes_and_reads_grayscale(tmp_path):
    root = _tree(tmp_path / "imgs", size=12)
    splits = load_folder(str(root), image_size=6, channels=1, cache_dir=str(tmp_path / "c"))
    assert splits.train.image_shape == (6, 6, 1)


def test_folder_source_skips_or_rejects_unreadable_images(tmp_path):
    root = _tree(tmp_path / "imgs")
    broken = root / "train" / "dog" / "broken.jpg"
    broken.write_bytes((root / "train" / "dog" / "0.jpg").read_bytes()[:40])
    with pytest.raises(DatasetError, match="broken.jpg"):
        load_folder(str(root), strict=True, cache_dir=str(tmp_path / "c1"))
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable.*broken.jpg"):
        splits = load_folder(str(root), cache_dir=str(tmp_path / "c2"))
    assert len(splits.train) == 6


def test_folder_source_rejects_inconsistent_trees(tmp_path):
    root = _tree(tmp_path / "a")
    (root / "test" / "bird").mkdir()
    (root / "test" / "bird" / "x.jpg").write_bytes((root / "test" / "cat" / "0.jpg").read_bytes())
    with pytest.raises(DatasetError, match=r"only in test: \['bird'\]"):
        load_folder(str(root), cache_dir=str(tmp_path / "c"))
    root = _tree(tmp_path / "b")
    (root / "train" / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty holds no images"):
        load_folder(str(root), cache_dir=str(tmp_path / "c"))
    with pytest.raises(DatasetError, match="does not exist"):
        load_folder(str(tmp_path / "missing"))


def test_tfds_dataset_missing_offline_names_dataset_directory_and_fix(tmp_path):
    with pytest.raises(OfflineError) as err:
        load_tfds("mnist", data_dir=str(tmp_path))
    message = str(err.value)
    assert "'mnist'" in message and str(tmp_path) in message
    assert "manually" in message and "data_dir" in message


def test_prefetch_keeps_order_and_reraises_errors():
    from jaxcnn.data import prefetch

    assert list(prefetch(iter(range(10)), size=2)) == list(range(10))

    def failing():
        yield 1
        raise DatasetError("disk gone")

    it = prefetch(failing())
    assert next(it) == 1
    with pytest.raises(DatasetError, match="disk gone"):
        next(it)


def test_prefetch_closed_early_stops_its_thread_and_drops_what_it_read_ahead():
    import itertools

    from jaxcnn.data.pipeline import Prefetch

    made = []

    def endless():
        for i in itertools.count():
            made.append(i)
            yield i

    ahead = Prefetch(endless(), size=2)
    it = iter(ahead)
    assert [next(it), next(it)] == [0, 1]
    ahead.close()  # the consumer stops early (an error, a preemption)
    assert not ahead._thread.is_alive() and ahead._queue.empty()
    assert len(made) <= 2 + 2 + 1  # consumed + queued + the one it held: then it stopped

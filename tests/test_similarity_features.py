"""FeatureExtractor / PixelExtractor / image loading: inputs of any kind and size, one
compiled program per batch shape, all devices, layers, workdir variables, loud random init."""

import json
import logging

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcnn.data.images import load_image, load_images
from jaxcnn.data.transforms import IMAGENET_MEAN
from jaxcnn.errors import ConfigError, DatasetError, InputError
from jaxcnn.loading import default_transform
from jaxcnn.models import abstract_variables, create_model
from jaxcnn.similarity.features import FeatureExtractor, PixelExtractor

RNG = np.random.default_rng(0)
IMAGES = [RNG.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in
          [(32, 32), (40, 24), (17, 50), (64, 64), (33, 31)]]
MODEL = "lenet5"  # the smallest network: compiles in a fraction of a second on CPU


def fake_variables(model, shape, seed=0):
    """Random variables shaped like the model's, drawn with numpy: no RNG compile on CPU."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: (0.3 * rng.standard_normal(a.shape)).astype(a.dtype),
                        abstract_variables(model, shape))


@pytest.fixture(scope="module")
def variables():
    return fake_variables(create_model(MODEL), (32, 32, 1), seed=1)


@pytest.fixture(scope="module")
def extractor(variables):
    return FeatureExtractor(MODEL, variables, batch_size=4)


def test_embeddings_of_any_sized_images_equal_one_at_a_time_and_compile_once(extractor):
    batch = extractor(IMAGES)  # 5 images, batch 4: the last batch is padded
    assert batch.shape == (5, 84) and batch.dtype == np.float32
    single = np.concatenate([extractor(im) for im in IMAGES])
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-6)
    assert extractor._embed._cache_size() == 1


def test_paths_pil_and_arrays_give_the_same_embedding(extractor, tmp_path):
    img = IMAGES[1]
    Image.fromarray(img).save(tmp_path / "a.png")
    as_path = extractor(str(tmp_path / "a.png"))
    as_pil = extractor(Image.fromarray(img))
    as_float = extractor(img.astype(np.float32) / 255.0)
    np.testing.assert_allclose(as_path, as_pil, rtol=1e-6)
    # Floats in [0, 1] are resized in float (torchvision's tensor path), uint8 images in
    # uint8 (torchvision's PIL path): inputs differ by PIL's 8-bit arithmetic only.
    t = extractor.transform
    np.testing.assert_allclose(t(img.astype(np.float32) / 255.0), t(img), atol=1.5 / 255)
    np.testing.assert_allclose(as_float, as_pil, atol=1e-2)


def test_sharded_over_four_devices_equals_one_device(variables):
    assert len(jax.devices()) == 4
    four = FeatureExtractor(MODEL, variables, batch_size=8)(IMAGES)
    one = FeatureExtractor(MODEL, variables, batch_size=8, devices=jax.devices()[:1])(IMAGES)
    np.testing.assert_allclose(four, one, rtol=1e-5, atol=1e-6)


def test_any_stage_can_be_the_embedding_and_unknown_stages_are_listed(variables):
    ext = FeatureExtractor(MODEL, variables, layer="stage2", batch_size=4)
    assert ext.dim == 5 * 5 * 16 and ext(IMAGES[:2]).shape == (2, 400)
    with pytest.raises(ConfigError, match="no feature stage 'stage9'.*pre_logits"):
        FeatureExtractor(MODEL, variables, layer="stage9")


def test_random_weights_warn_loudly(caplog):
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="RANDOM") as seen:
        ext = FeatureExtractor(MODEL, batch_size=4)
    assert len(seen) == 1 and "NO trained weights" in str(seen[0].message)
    assert "NO trained weights" not in caplog.text  # one warning, not also a log line
    assert ext.weights.startswith("random")


def test_variables_of_another_architecture_are_rejected(variables):
    wrong = fake_variables(create_model(MODEL, num_classes=3), (32, 32, 1))
    with pytest.raises(ConfigError, match="do not fit lenet5"):
        FeatureExtractor(MODEL, wrong)


def test_variables_from_a_training_workdir_with_its_transform(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    model = create_model(MODEL, num_classes=3)
    variables = fake_variables(model, (32, 32, 1), seed=2)
    workdir = tmp_path / "run"
    state = {"step": np.int32(7), "params": variables["params"], "opt_state": {}}
    with ocp.CheckpointManager(workdir / "checkpoints", item_names=("state", "meta")) as m:
        m.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave({"step": 7})))
        m.wait_until_finished()
    info = {"model": MODEL, "model_kwargs": {"num_classes": 3, "in_channels": 1},
            "input_shape": [32, 32, 1], "mean": [100.0], "std": [50.0],
            "class_names": ["a", "b", "c"], "best_metric": "accuracy", "best_mode": "max"}
    (workdir / "run.json").write_text(json.dumps(info))
    (workdir / "config.json").write_text(json.dumps({"model": {"name": MODEL}}))
    monkeypatch.chdir(tmp_path)  # a relative workdir, as typed on the command line
    ext = FeatureExtractor(MODEL, weights="run", batch_size=4)
    assert ext.weights == str(workdir)  # recorded absolute: indexes work from anywhere
    assert ext.transform.mean == (100.0,) and ext.model.num_classes == 3
    assert ext.transform.size == (32, 32) and "step 7" in ext.source
    gray = load_images(IMAGES[:3], 32).astype(np.float32) @ np.array([0.299, 0.587, 0.114])
    x = ((gray - 100.0) / 50.0)[..., None].astype(np.float32)
    expected = model.apply(variables, x, method=model.features)["pre_logits"]
    np.testing.assert_allclose(ext(IMAGES[:3]), np.asarray(expected), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="trained 'lenet5', not 'small_cnn'"):
        FeatureExtractor("small_cnn", weights=workdir)


def test_imagenet_models_default_to_torchvision_eval_transform():
    prep = default_transform("resnet18")
    assert prep.size == (224, 224) and prep.resize_size == 256
    assert prep.mean == IMAGENET_MEAN
    out = prep(RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    small = default_transform("lenet5")  # 1-channel 32x32: plain resize, luma, [0, 1]
    gray = small(np.full((50, 60, 3), 255, np.uint8))
    assert gray.shape == (32, 32, 1)
    np.testing.assert_allclose(gray, 1.0, atol=1e-5)


def test_pixel_extractor_resizes_to_a_common_size_in_unit_range():
    emb = PixelExtractor(8)(IMAGES)
    assert emb.shape == (5, 8 * 8 * 3) and 0.0 <= emb.min() and emb.max() <= 1.0


def test_grayscale_and_rgba_files_become_rgb_and_corrupt_files_are_named(tmp_path):
    Image.fromarray(np.full((5, 6), 77, np.uint8), "L").save(tmp_path / "g.png")
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[0, 0, 3] = 255  # one opaque red pixel; the rest transparent -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (5, 6, 3) and (g == 77).all()
    t = load_image(tmp_path / "t.png")
    assert t.shape == (4, 4, 3) and tuple(t[0, 0]) == (255, 0, 0) and tuple(t[1, 1]) == (
        255, 255, 255)
    with pytest.raises(DatasetError, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(DatasetError, match="no image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="HWC"):
        load_image(np.zeros((2, 3, 4, 5)))

"""The weights registry, preprocessing, converters' error reporting, file reading,
downloads into the cache (sha256-checked, offline errors), saved variables, the `jaxcnn
convert` command and `predict`. No network and no torch needed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcnn import cli
from jaxcnn.classify import predict
from jaxcnn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from jaxcnn.errors import CheckpointError, DatasetError, OfflineError, UnknownModelError
from jaxcnn.pretrained import (
    chw_to_hwc_dense_kernel,
    conv_kernel,
    convert,
    dense_kernel,
    download,
    from_torchvision,
    get_weights,
    hub,
    imagenet_categories,
    list_weights,
    load,
    read_state_dict,
    restore_variables,
    save_variables,
)
from jaxcnn.pretrained.synthetic import synthetic_image, synthetic_state_dict

GOLDEN = Path(__file__).parent / "golden"
KEYS = json.loads((GOLDEN / "torchvision_keys.json").read_text())


def test_registry_has_torchvision_metadata_for_every_converted_model() -> None:
    models = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
              "resnext50_32x4d", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn",
              "vgg16_bn", "vgg19_bn", "alexnet", "googlenet", "mobilenet_v2",
              "fasterrcnn_resnet50_fpn"}  # fmt: skip
    assert {w.split(".")[0] for w in list_weights()} == models
    r50 = get_weights("resnet50")
    assert r50.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert r50.sha256_prefix == "0676ba61" and r50.filename == "resnet50-0676ba61.pth"
    assert (r50.acc1, r50.acc5, r50.num_params) == (76.13, 92.862, 25557032)
    assert get_weights("resnet50", "DEFAULT").name == "IMAGENET1K_V2"
    assert get_weights("resnet50", "IMAGENET1K_V2").resize_size == 232
    assert get_weights("alexnet").sha256_prefix == "7be5be79"  # "alexnet-owt-7be5be79.pth"
    meta = get_weights("vgg16_bn").meta
    assert meta["_metrics"]["ImageNet-1K"] == {"acc@1": 73.36, "acc@5": 91.516}
    assert len(meta["categories"]) == 1000 and meta["categories"][0] == "tench"
    with pytest.raises(UnknownModelError, match="resnet18"):
        get_weights("resnet19")
    with pytest.raises(UnknownModelError, match="IMAGENET1K_V1"):
        get_weights("resnet18", "IMAGENET1K_V9")


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "googlenet"])
def test_registered_num_params_equal_the_converted_count(name: str) -> None:
    state = {k: np.broadcast_to(np.float32(0), s) for k, s in KEYS[name]}
    params = from_torchvision(name, state)["params"]
    import jax

    assert sum(x.size for x in jax.tree.leaves(params)) == get_weights(name).num_params


def test_imagenet_categories_are_torchvisions() -> None:
    names = imagenet_categories()
    assert len(names) == 1000
    assert (names[0], names[1], names[207], names[999]) == (
        "tench", "goldfish", "golden retriever", "toilet tissue")


def test_preprocess_matches_torchvision_on_pil_arrays_and_floats() -> None:
    golden = np.load(GOLDEN / "preprocess.npz")
    transform = get_weights("resnet18").transforms()
    img = synthetic_image()
    from_pil = transform(Image.fromarray(img))
    assert from_pil.shape == (224, 224, 3) and from_pil.dtype == np.float32
    np.testing.assert_allclose(from_pil[::4, ::4], golden["pil"], atol=1e-6)
    np.testing.assert_array_equal(transform(img), from_pil)  # uint8 HWC == PIL
    from_float = transform(img.astype(np.float32) / 255)  # torchvision's tensor path
    np.testing.assert_allclose(from_float[::4, ::4], golden["tensor"], atol=1e-4)
    gray = transform(img[..., 0])
    assert gray.shape == (224, 224, 3)
    # A small image is upscaled then cropped; black pixels map to -mean/std.
    black = transform(np.zeros((10, 30, 3), np.uint8))
    np.testing.assert_allclose(black[0, 0], -np.array(IMAGENET_MEAN) / IMAGENET_STD,
                               rtol=1e-6)  # fmt: skip


def test_layout_helpers() -> None:
    w = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # O I kh kw
    assert conv_kernel(w).shape == (4, 5, 3, 2) and conv_kernel(w)[1, 2, 0, 1] == w[1, 0, 1, 2]
    assert dense_kernel(np.ones((7, 3))).shape == (3, 7)
    # The permuted kernel applied to an NHWC flatten equals torch's on the CHW flatten.
    rng = np.random.default_rng(0)
    c, h, wd, out = 3, 2, 4, 5
    fmap = rng.standard_normal((c, h, wd))
    weight = rng.standard_normal((out, c * h * wd))
    kernel = chw_to_hwc_dense_kernel(c, h, wd)(weight)
    np.testing.assert_allclose(fmap.transpose(1, 2, 0).reshape(-1) @ kernel,
                               weight @ fmap.reshape(-1))  # fmt: skip


def test_convert_reports_every_problem_at_once() -> None:
    target = {"params": {"fc": {"kernel": np.zeros((3, 2)), "bias": np.zeros(2)},
                         "conv": {"kernel": np.zeros((3, 3, 1, 4))}}}  # fmt: skip
    key_map = {"fc.weight": ("params/fc/kernel", dense_kernel),
               "fc.bias": ("params/fc/bias", lambda x: x),
               "conv.weight": ("params/conv/kernel", conv_kernel)}  # fmt: skip
    good = {"fc.weight": np.ones((2, 3)), "fc.bias": np.ones(2),
            "conv.weight": np.ones((4, 1, 3, 3)), "bn.num_batches_tracked": np.int64(3)}
    out = convert(good, key_map, target)
    assert out["params"]["fc"]["kernel"].shape == (3, 2)
    assert out["params"]["conv"]["kernel"].dtype == np.float32
    bad = {"fc.weight": np.ones((2, 4)), "conv.weight": np.ones((4, 1, 3, 3)),
           "extra.weight": np.ones(5)}
    with pytest.raises(CheckpointError) as err:
        convert(bad, key_map, target)
    msg = str(err.value)
    for part in ("unexpected keys", "extra.weight", "missing keys", "fc.bias",
                 "shape mismatches", "fc.weight (2, 4)", "expected (3, 2)"):
        assert part in msg, part
    out = convert({**good, "extra.weight": np.ones(5)}, key_map, target, strict=False)
    assert set(out["params"]) == {"fc", "conv"}


def test_from_torchvision_rejects_another_architecture() -> None:
    state = synthetic_state_dict(KEYS["resnet18"])
    with pytest.raises(CheckpointError) as err:
        from_torchvision("resnet34", state)
    assert "missing keys in the source (80)" in str(err.value)  # resnet34 has 80 more
    assert "layer1.2.conv1.weight" in str(err.value)
    with pytest.raises(UnknownModelError):
        from_torchvision("lenet5", state)


@pytest.fixture(scope="module")
def mobilenet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from safetensors.numpy import save_file

    state = synthetic_state_dict(KEYS["mobilenet_v2"])
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    return path, from_torchvision("mobilenet_v2", state)


def _assert_same(a: dict, b: dict) -> None:
    import jax

    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_safetensors_load_save_restore_and_convert_command(mobilenet_file, tmp_path,
                                                           capsys) -> None:  # fmt: skip
    path, expected = mobilenet_file
    _assert_same(load("mobilenet_v2", path=path), expected)
    out = tmp_path / "converted"
    save_variables(expected, out, {"model": "mobilenet_v2"})
    _assert_same(restore_variables(out), expected)
    _assert_same(load("mobilenet_v2", path=out), expected)
    assert cli.main(["convert", "mobilenet_v2", "--from", str(path), "--to",
                     str(tmp_path / "cli")]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["num_params"] == 3_504_872
    _assert_same(restore_variables(tmp_path / "cli"), expected)
    meta = json.loads((tmp_path / "cli" / "meta.json").read_text())
    assert meta["transforms"]["crop_size"] == 224 and meta["source"] == str(path)


def test_pth_without_torch_names_the_extra(tmp_path, monkeypatch) -> None:
    file = tmp_path / "resnet18-f37072fd.pth"
    file.write_bytes(b"not a pickle")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(CheckpointError, match=r"jaxcnn\[torch\]"):
        read_state_dict(file)
    with pytest.raises(CheckpointError, match="Unknown weights file type"):
        read_state_dict(tmp_path.joinpath("w.h5").touch() or tmp_path / "w.h5")


def _entry_for(file: Path, tmp: Path) -> tuple:
    """A registry entry whose URL is a local file:// copy named with its sha256 prefix."""
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:8]
    served = tmp / "server" / f"mobilenet_v2-{digest}.safetensors"
    served.parent.mkdir()
    served.write_bytes(file.read_bytes())
    entry = dataclasses.replace(get_weights("mobilenet_v2"), url=served.as_uri())
    return entry, served


def test_download_verifies_hash_and_caches(mobilenet_file, tmp_path, monkeypatch) -> None:
    path, expected = mobilenet_file
    entry, served = _entry_for(path, tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setenv("JAXCNN_CACHE", str(cache))
    dest = download(entry)
    assert dest == cache / served.name and dest.read_bytes() == served.read_bytes()
    monkeypatch.setattr(hub, "get_weights", lambda name, weights: entry)
    _assert_same(load("mobilenet_v2"), expected)  # from the cache, hash checked again
    dest.write_bytes(dest.read_bytes()[:1000])  # truncated in the cache
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load("mobilenet_v2")
    dest.unlink()
    served.write_bytes(b"tampered")  # the server sends something else
    with pytest.raises(CheckpointError, match="sha256"):
        download(entry, tmp_path / "other")
    assert not list((tmp_path / "other").iterdir())  # nothing half-written is left


def test_offline_error_gives_url_and_destination(tmp_path) -> None:
    entry = dataclasses.replace(get_weights("resnet18"),
                                url="http://127.0.0.1:9/resnet18-f37072fd.pth")  # fmt: skip
    with pytest.raises(OfflineError) as err:
        download(entry, tmp_path, timeout=5)
    assert entry.url in str(err.value)
    assert str(tmp_path / "resnet18-f37072fd.pth") in str(err.value)


def test_predict_returns_top5_labels(mobilenet_file) -> None:
    _, variables = mobilenet_file
    img = synthetic_image()
    top = predict("mobilenet_v2", Image.fromarray(img), variables=variables)
    assert len(top) == 5
    labels, probs = zip(*top, strict=True)
    assert set(labels) <= set(imagenet_categories())
    assert list(probs) == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    both = predict("mobilenet_v2", [img, Image.fromarray(img)], variables=variables)
    assert [label for label, _ in both[0]] == list(labels) == [label for label, _ in both[1]]
    np.testing.assert_allclose([p for _, p in both[0]], probs, rtol=1e-5)


def test_predict_reads_paths_and_names_a_corrupt_file(mobilenet_file, tmp_path) -> None:
    _, variables = mobilenet_file
    img = synthetic_image()
    Image.fromarray(img).save(tmp_path / "ok.png")
    from_path = predict("mobilenet_v2", tmp_path / "ok.png", variables=variables)
    from_pil = predict("mobilenet_v2", Image.fromarray(img), variables=variables)
    assert [label for label, _ in from_path] == [label for label, _ in from_pil]
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="bad.jpg"):
        predict("mobilenet_v2", tmp_path / "bad.jpg", variables=variables)

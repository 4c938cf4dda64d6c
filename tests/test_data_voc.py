"""The VOC-format detection source on tiny generated trees: boxes scaled with the resize,
padding and masks, class names, the flat and devkit layouts, flips and crops moving the boxes
with the pixels, and every bad-input rule of jaxcnn.data.voc."""

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcnn import DatasetError
from jaxcnn.data import load_voc, parse_voc_xml
from jaxcnn.data.augment import alternating_flip, random_crop

OBJ = (
    "<object><name>{name}</name><difficult>{diff}</difficult><bndbox><xmin>{x1}</xmin>"
    "<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
)


def write_image(root: Path, layout: tuple[str, str, str], image_id: str, size, objects,
                split: str, *, xml_size=None, raw_xml=None, image=True) -> None:  # fmt: skip
    """One image (black, each box painted white) and its annotation."""
    ann, img, splits = (root / d for d in layout)
    for d in (ann, img, splits):
        d.mkdir(parents=True, exist_ok=True)
    w, h = size
    if image:
        pixels = np.zeros((h, w, 3), np.uint8)
        for o in objects:
            if "nan" not in map(str, o):
                x1, y1, x2, y2 = (int(v) for v in o[1:5])
                pixels[y1:y2, x1:x2] = 255
        Image.fromarray(pixels).save(img / f"{image_id}.png")
    sw, sh = xml_size or size
    body = "".join(
        OBJ.format(name=n, x1=a, y1=b, x2=c, y2=d, diff=int(diff))
        for n, a, b, c, d, diff in objects
    )
    xml = raw_xml or (
        f"<annotation><filename>{image_id}.png</filename><size><width>{sw}</width>"
        f"<height>{sh}</height><depth>3</depth></size>{body}</annotation>"
    )
    (ann / f"{image_id}.xml").write_text(xml)
    with open(splits / f"{split}.txt", "a") as f:
        f.write(image_id + "\n")


FLAT = ("annotations", "images", "splits")
DEVKIT = ("Annotations", "JPEGImages", "ImageSets/Main")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    write_image(root, FLAT, "a", (80, 60), [("dog", 8, 12, 40, 36, 0)], "train")
    write_image(
        root, FLAT, "b", (64, 96), [("cat", 16, 8, 48, 40, 0), ("dog", 4, 60, 20, 92, 1)], "train"
    )
    write_image(root, FLAT, "c", (100, 50), [], "train")  # no object: a negative image
    write_image(root, FLAT, "d", (50, 50), [("cat", 10, 10, 30, 30, 0)], "test")
    return root


def test_boxes_scale_with_the_resize_and_pad_with_a_mask(voc_root):
    splits = load_voc(str(voc_root), image_size=32)
    assert splits.class_names == ("cat", "dog")  # sorted names from the XML
    tr = splits.train.arrays
    assert tr["image"].shape == (3, 32, 32, 3) and tr["boxes"].shape == (3, 2, 4)
    np.testing.assert_allclose(
        tr["boxes"][0, 0], [8 * 32 / 80, 12 * 32 / 60, 40 * 32 / 80, 36 * 32 / 60]
    )
    np.testing.assert_array_equal(tr["box_mask"], [[True, False], [True, True], [False, False]])
    np.testing.assert_array_equal(tr["box_labels"][1], [0, 1])
    np.testing.assert_array_equal(tr["difficult"][1], [False, True])
    np.testing.assert_array_equal(tr["orig_size"], [[60, 80], [96, 64], [50, 100]])
    for img, boxes, mask in zip(tr["image"], tr["boxes"], tr["box_mask"], strict=True):
        for (x1, y1, x2, y2), real in zip(boxes, mask, strict=True):
            if real:  # the painted pixels are inside the scaled box
                inner = img[int(np.ceil(y1)) + 1 : int(y2) - 1, int(np.ceil(x1)) + 1 : int(x2) - 1]
                assert inner.min() > 200
        painted = img.max(-1) > 128
        covered = np.zeros_like(painted)
        for (x1, y1, x2, y2), real in zip(boxes, mask, strict=True):
            if real:
                covered[int(y1) : int(np.ceil(y2)) + 1, int(x1) : int(np.ceil(x2)) + 1] = True
        assert not (painted & ~covered).any()  # and nothing painted outside them
    assert len(splits.test) == 1 and splits.test.arrays["boxes"].shape[1] == 2  # same K


def test_config_class_names_set_the_label_order_and_unknown_names_fail(voc_root):
    splits = load_voc(str(voc_root), image_size=16, class_names=("dog", "cat", "bird"))
    assert splits.num_classes == 3
    np.testing.assert_array_equal(splits.train.arrays["box_labels"][1], [1, 0])
    with pytest.raises(DatasetError, match="'cat' is not one of the 1 class_names"):
        load_voc(str(voc_root), image_size=16, class_names=("dog",))


def test_devkit_layout_and_jpeg(tmp_path):
    write_image(
        tmp_path, DEVKIT, "2007_000001", (40, 40), [("person", 5, 5, 20, 35, 0)], "trainval"
    )
    write_image(tmp_path, DEVKIT, "2007_000002", (40, 40), [("person", 1, 1, 9, 9, 0)], "test")
    splits = load_voc(str(tmp_path), image_size=20, train_split="trainval")
    np.testing.assert_allclose(splits.train.arrays["boxes"][0, 0], [2.5, 2.5, 10, 17.5])


def test_horizontal_flip_moves_boxes_with_the_pixels(voc_root):
    tr = load_voc(str(voc_root), image_size=32).train.arrays
    batch = {k: jnp.asarray(v) for k, v in tr.items()}
    flipped = alternating_flip(batch, epoch=1)  # odd epoch: every image mirrored
    np.testing.assert_array_equal(flipped["image"], tr["image"][:, :, ::-1])
    b = tr["boxes"]
    want = np.stack([32 - b[..., 2], b[..., 1], 32 - b[..., 0], b[..., 3]], -1)
    np.testing.assert_allclose(flipped["boxes"], want)
    x1, y1, x2, y2 = np.asarray(flipped["boxes"][0, 0])
    inner = np.asarray(
        flipped["image"][0, int(np.ceil(y1)) + 1 : int(y2) - 1, int(np.ceil(x1)) + 1 : int(x2) - 1]
    )
    assert inner.min() > 200
    np.testing.assert_array_equal(alternating_flip(batch, epoch=2)["boxes"], b)


def test_random_crop_translates_and_clips_boxes(voc_root):
    tr = load_voc(str(voc_root), image_size=32).train.arrays
    batch = {k: jnp.asarray(v) for k, v in tr.items()}
    out = random_crop(jax.random.key(3), batch, padding=12)
    for i in range(3):
        for (x1, y1, x2, y2), real in zip(
            np.asarray(out["boxes"][i]), np.asarray(out["box_mask"][i]), strict=True
        ):
            assert 0 <= x1 <= x2 <= 32 and 0 <= y1 <= y2 <= 32
            if real and x2 - x1 > 3 and y2 - y1 > 3:
                inner = np.asarray(
                    out["image"][
                        i, int(np.ceil(y1)) + 1 : int(y2) - 1, int(np.ceil(x1)) + 1 : int(x2) - 1
                    ]
                )
                assert inner.size == 0 or inner.min() > 200


# ---------------------------------------------------------------- bad input


def _tree(tmp_path, extra):
    write_image(tmp_path, FLAT, "ok", (40, 40), [("cat", 5, 5, 30, 30, 0)], "train")
    write_image(tmp_path, FLAT, "t", (40, 40), [("cat", 5, 5, 30, 30, 0)], "test")
    extra(tmp_path)
    return str(tmp_path)


SMALL = ("cat", 2, 2, 8, 8, 0)
BAD_TREES = {  # image id -> (objects, write_image options, warning pattern, images kept)
    "bad": ([], {"raw_xml": "<annotation><filename"}, r"bad\.xml: cannot parse", 1),
    "gone": (
        [SMALL],
        {"image": False},
        r"gone\.xml names the image gone\.png, which is missing",
        1,
    ),
    "flip": ([("cat", 30, 5, 10, 20, 0), SMALL], {}, r"flip\.xml: object 0 \(cat\) .* x2 <= x1", 2),
    "nan": ([("cat", "nan", 5, 10, 20, 0), SMALL], {}, r"nan\.xml: object 0 .* non-numeric", 2),
    "out": (
        [("cat", 30, 30, 60, 70, 0)],
        {},
        r"out\.xml: object 0 .* outside the 40x40 image; clipped",
        2,
    ),
    "far": (
        [("cat", 50, 50, 60, 70, 0)],
        {},
        r"far\.xml: object 0 .* lies outside the 40x40 image",
        2,
    ),
}


@pytest.mark.parametrize("image_id", sorted(BAD_TREES))
def test_bad_annotations_warn_naming_the_file_or_fail_when_strict(tmp_path, image_id):
    objects, options, warning, kept = BAD_TREES[image_id]
    root = _tree(
        tmp_path, lambda r: write_image(r, FLAT, image_id, (40, 40), objects, "train", **options)
    )
    with pytest.warns(UserWarning, match=warning):
        splits = load_voc(root, image_size=16)
    assert len(splits.train) == kept
    assert np.isfinite(splits.train.arrays["boxes"]).all()
    assert (splits.train.arrays["boxes"] >= 0).all() and (splits.train.arrays["boxes"] <= 16).all()
    with pytest.raises(DatasetError, match=warning):
        load_voc(root, image_size=16, strict=True)


def test_more_boxes_than_max_boxes_keeps_the_largest(tmp_path):
    objs = [("cat", 0, 0, 4, 4, 0), ("cat", 0, 0, 30, 30, 0), ("cat", 0, 0, 10, 10, 0)]
    root = _tree(tmp_path, lambda r: write_image(r, FLAT, "many", (40, 40), objs, "train"))
    with pytest.warns(UserWarning, match=r"many\.xml has 3 boxes, more than data\.max_boxes=2"):
        splits = load_voc(root, image_size=40, max_boxes=2)
    i = 1  # "ok" then "many" in split order
    np.testing.assert_allclose(splits.train.arrays["boxes"][i], [[0, 0, 30, 30], [0, 0, 10, 10]])


def test_xml_size_disagreeing_with_the_image_warns_and_uses_the_image(tmp_path):
    root = _tree(
        tmp_path,
        lambda r: write_image(
            r, FLAT, "sz", (40, 20), [("cat", 0, 0, 40, 20, 0)], "train", xml_size=(80, 40)
        ),
    )
    with pytest.warns(UserWarning, match=r"sz\.xml: <size> says 80x40 but sz\.png is 40x20"):
        splits = load_voc(root, image_size=10)
    np.testing.assert_allclose(splits.train.arrays["boxes"][1, 0], [0, 0, 10, 10])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 0}, "set --config.data.image_size"),
        ({"image_size": 8, "train_split": "nope"}, r"no split file .*nope\.txt"),
    ],
)
def test_load_voc_config_errors(tmp_path, kwargs, match):
    root = _tree(tmp_path, lambda r: None)
    with pytest.raises(DatasetError, match=match):
        load_voc(root, **kwargs)
    with pytest.raises(DatasetError, match="not a VOC-format tree"):
        load_voc(str(tmp_path / "images"), image_size=8)


def test_parse_voc_xml_reports_missing_fields(tmp_path):
    bad = tmp_path / "x.xml"
    bad.write_text(
        "<annotation><filename>x.png</filename><object><name>cat</name></object></annotation>"
    )
    with pytest.raises(DatasetError, match=r"x\.xml: an <object> has no <bndbox>/<xmin>"):
        parse_voc_xml(bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = tmp_path / "y.xml"
        ok.write_text("<annotation><filename>y.png</filename></annotation>")
        rec = parse_voc_xml(ok)
    assert rec.boxes.shape == (0, 4) and rec.image.name == "y.png"


def test_a_16_bit_grayscale_photo_is_scaled_to_8_bits_not_clipped(tmp_path):
    write_image(tmp_path, FLAT, "a", (16, 16), [("dog", 2, 2, 12, 12, 0)], "train")
    write_image(tmp_path, FLAT, "t", (16, 16), [("dog", 2, 2, 12, 12, 0)], "test")
    mid = np.full((16, 16), 32896, np.uint16)  # 128 * 257: mid-grey in 16 bits
    Image.fromarray(mid).save(tmp_path / "images" / "a.png")  # a 16-bit PNG (mode I;16)
    assert Image.open(tmp_path / "images" / "a.png").mode.startswith("I")
    splits = load_voc(str(tmp_path), image_size=16)
    assert np.unique(splits.train.arrays["image"]).tolist() == [128]  # PIL's convert gives 255

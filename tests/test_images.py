"""load_rgb on every pixel format real medical images come in, and on broken files."""

import io

import numpy as np
import pytest
from PIL import Image

from medft.data.images import load_rgb
from medft.util.errors import DataError

SIZE = (40, 30)  # width, height: not square, so a transposed result would be caught


def gradient(dtype=np.uint8, hi=255):
    """A horizontal ramp 0..hi of shape (height, width)."""
    row = np.linspace(0, hi, SIZE[0])
    return np.tile(row, (SIZE[1], 1)).astype(dtype)


def save(tmp_path, img, name, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def check_rgb(img):
    assert img.mode == "RGB"
    assert img.size == SIZE
    return np.asarray(img)


def test_grayscale_png(tmp_path):
    path = save(tmp_path, Image.fromarray(gradient()), "gray.png")
    arr = check_rgb(load_rgb(path))
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    assert arr[0, 0, 0] == 0 and arr[0, -1, 0] == 255


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    # a 12-bit-style CT slice: values 0..4000 stored in a 16-bit PNG
    path = save(tmp_path, Image.fromarray(gradient(np.uint16, hi=4000)), "ct16.png")
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really a 16-bit image on disk
    arr = check_rgb(load_rgb(path))[..., 0]
    assert arr.min() == 0 and arr.max() == 255
    assert 0.1 < (arr > 127).mean() < 0.9, "16-bit image came out (almost) all white or all black"
    assert (np.diff(arr[0].astype(int)) >= 0).all()  # the ramp stays a ramp


def test_float_image(tmp_path):
    arr = gradient(np.float32, hi=1.0)
    img = Image.fromarray(arr)
    assert img.mode == "F"
    path = save(tmp_path, img, "float.tiff")
    out = check_rgb(load_rgb(path))[..., 0]
    assert out.min() == 0 and out.max() == 255


def test_constant_16bit_image_does_not_crash(tmp_path):
    path = save(tmp_path, Image.fromarray(np.full((SIZE[1], SIZE[0]), 700, np.uint16)), "flat16.png")
    check_rgb(load_rgb(path))


def test_cmyk_jpeg(tmp_path):
    rgb = Image.new("RGB", SIZE, (200, 40, 40))
    path = save(tmp_path, rgb.convert("CMYK"), "cmyk.jpg", quality=95)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    arr = check_rgb(load_rgb(path)).astype(int)
    assert arr[..., 0].mean() > 150 and arr[..., 1].mean() < 90  # still red-ish


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((SIZE[1], SIZE[0], 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, : SIZE[0] // 2, 3] = 255  # left half opaque white, right half transparent white
    path = save(tmp_path, Image.fromarray(rgba), "rgba.png")
    arr = check_rgb(load_rgb(path))
    assert (arr[:, : SIZE[0] // 2] == 255).all()
    assert (arr[:, SIZE[0] // 2 :] == 0).all()


def test_la_image(tmp_path):
    la = Image.merge("LA", [Image.new("L", SIZE, 200), Image.new("L", SIZE, 0)])
    path = save(tmp_path, la, "la.png")
    assert (check_rgb(load_rgb(path)) == 0).all()  # fully transparent -> black


def test_palette_image_with_and_without_transparency(tmp_path):
    indices = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    indices[:, SIZE[0] // 2 :] = 1
    pal = Image.fromarray(indices).convert("P")
    pal.putpalette([255, 255, 255, 100, 100, 100])  # index 0 white, index 1 gray
    arr = check_rgb(load_rgb(save(tmp_path, pal, "pal.png")))
    assert (arr[:, 0] == 255).all() and (arr[:, -1] == 100).all()
    arr = check_rgb(load_rgb(save(tmp_path, pal, "pal_t.png", transparency=0)))
    assert (arr[:, 0] == 0).all() and (arr[:, -1] == 100).all()  # transparent white -> black


def test_bilevel_image(tmp_path):
    path = save(tmp_path, Image.fromarray(gradient() > 127), "bw.png")
    arr = check_rgb(load_rgb(path))
    assert set(np.unique(arr)) == {0, 255}


def test_truncated_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)).save(buf, "PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError) as excinfo:
        load_rgb(path)
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)).save(buf, "JPEG")
    path = tmp_path / "truncated.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match="truncated"):
        load_rgb(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(DataError) as excinfo:
        load_rgb(path)
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(DataError, match="not found") as excinfo:
        load_rgb(path)
    assert str(path) in str(excinfo.value)

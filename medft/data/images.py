"""Read medical images of any common pixel format as 8-bit RGB.

Real radiology images come as 8-bit grayscale JPEG/PNG, 16-bit PNG (CT/MR windows exported
without rescaling), float TIFF, CMYK JPEG (from print workflows), palette PNG or images with an
alpha channel. Vision encoders want RGB, so :func:`load_rgb` maps all of them to ``'RGB'``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medft.util.errors import DataError

# Modes whose pixel values are not 0..255 and must be rescaled, not clipped.
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Modes that carry transparency.
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}

_FIX = "re-download or replace the file, or remove its records from the annotations"

# dataset.max_image_pixels: larger images are refused before they are decoded (Pillow's own
# decompression-bomb check is replaced by this one, whose limit the user sets and the message names).
DEFAULT_MAX_PIXELS = 100_000_000
# +dataset.max_batch_pixels: the decoded pixels of one batch's images together (each item is decoded, then
# copied by the processor): 64 records naming one 9000 x 9000 PNG would otherwise hold ~15 GB at once.
DEFAULT_MAX_BATCH_PIXELS = 1_000_000_000  # ~3 GB as 8-bit RGB; 64 MIMIC-CXR JPGs (~7.5 Mpx each) take half
_limit = {"pixels": DEFAULT_MAX_PIXELS, "batch": DEFAULT_MAX_BATCH_PIXELS}
Image.MAX_IMAGE_PIXELS = None


def set_max_pixels(limit: int | None, batch_limit: int | None = None) -> None:
    """Set the pixel limits of :func:`load_rgb` (``dataset.max_image_pixels``) and of one batch
    (``dataset.max_batch_pixels``, :func:`check_batch_pixels`); None: the default."""
    _limit["pixels"] = DEFAULT_MAX_PIXELS if limit is None else int(limit)
    _limit["batch"] = DEFAULT_MAX_BATCH_PIXELS if batch_limit is None else int(batch_limit)


_sizes: dict[str, int] = {}


def image_pixels(path: str | Path) -> int:
    """Width x height from the file's header (nothing decoded); 0 when unreadable (load_rgb says why)."""
    key = str(path)
    if key not in _sizes:
        try:
            with Image.open(path) as img:
                _sizes[key] = img.size[0] * img.size[1]
        except Exception:  # noqa: BLE001 - any unreadable file: load_rgb raises the one-line error
            _sizes[key] = 0
        if len(_sizes) > 1_000_000:
            _sizes.clear()
    return _sizes[key]


def check_batch_pixels(items: list[list[str | Path]]) -> None:
    """Refuse a batch whose images (``items``: each sample's views) hold more decoded pixels than
    ``dataset.max_batch_pixels``, from the headers alone, before any of them is decoded."""
    sizes = [(sum(image_pixels(p) for p in views), views[0]) for views in items if views]
    total = sum(n for n, _ in sizes)
    if total > _limit["batch"]:
        n, path = max(sizes, key=lambda s: s[0])
        raise DataError(
            f"a batch of {len(items)} samples holds {total:,} decoded pixels (e.g. {path}: {n:,}), above "
            f"dataset.max_batch_pixels={_limit['batch']:,} (~{_limit['batch'] * 3 / 2**30:.0f} GB as RGB): lower "
            "data.batch_size / data.eval_batch_size, downscale the images, or raise +dataset.max_batch_pixels"
        )


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` and return it as an 8-bit ``'RGB'`` image of the same size.

    Raises :class:`DataError` (one line, naming the file) when the file is missing, is not an
    image, or is truncated/corrupt.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
            if width * height > _limit["pixels"]:
                raise DataError(
                    f"cannot read image {path}: too large ({width} x {height} = {width * height:,} pixels, above "
                    f"dataset.max_image_pixels={_limit['pixels']:,}): downscale it, or raise dataset.max_image_pixels"
                )
            img.load()  # decode now so that truncated files fail here, inside the try
            return to_rgb(img)
    except FileNotFoundError:
        raise DataError(f"cannot read image {path}: file not found; {_FIX}") from None
    except IsADirectoryError:
        raise DataError(f"cannot read image {path}: is a directory, not an image file; {_FIX}") from None
    except UnidentifiedImageError:
        raise DataError(f"cannot read image {path}: not an image file (unrecognized format); {_FIX}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # Pillow reports truncated/corrupt data as OSError (sometimes SyntaxError/ValueError).
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"cannot read image {path}: truncated or corrupt ({reason}); {_FIX}") from None


def load_views(paths: list[str | Path]) -> Image.Image:
    """One RGB image of a study's views: the single view itself, or all side by side at one height.

    Each view keeps its aspect ratio and is scaled to the smallest view height (a frontal and a
    lateral chest X-ray become one wide image, as single-image encoders need).
    """
    views = [load_rgb(p) for p in paths]
    if len(views) == 1:
        return views[0]
    height = min(v.height for v in views)
    views = [v if v.height == height else v.resize((max(1, round(v.width * height / v.height)), height)) for v in views]
    canvas = Image.new("RGB", (sum(v.width for v in views), height))
    x = 0
    for v in views:
        canvas.paste(v, (x, 0))
        x += v.width
    return canvas


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a loaded PIL image of any mode to a new 8-bit ``'RGB'`` image."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in _HIGH_DEPTH_MODES:
        return _rescale_to_gray(img).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        return _composite_on_black(img.convert("RGBA"))
    if mode in _ALPHA_MODES:
        return _composite_on_black(img.convert("RGBA"))
    if mode in ("1", "L"):
        return img.convert("L").convert("RGB")
    # CMYK (Pillow undoes Adobe's inverted CMYK when decoding), YCbCr, LAB, HSV, P, ...
    return img.convert("RGB")


def _rescale_to_gray(img: Image.Image) -> Image.Image:
    """Map a 16-bit/32-bit/float image linearly from its min..max to 0..255 ('L').

    Clipping would turn a 12-bit CT (values 0..4095) almost entirely white; rescaling keeps
    the contrast. A constant image becomes black. NaN/inf pixels become black.
    """
    arr = np.asarray(img).astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return Image.new("L", img.size, 0)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if hi <= lo:
        out = np.zeros(arr.shape, dtype=np.uint8)
    else:
        scaled = (np.where(finite, arr, lo) - lo) * (255.0 / (hi - lo))
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(out)  # 2-D uint8 -> mode "L"


def _composite_on_black(rgba: Image.Image) -> Image.Image:
    """Flatten an RGBA image onto a black background (the usual background of radiographs)."""
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")

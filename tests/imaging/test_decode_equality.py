"""The same odd picture gives the same pixels to training, to the processor, to the predictor and to the runtime.

Every reader goes through :mod:`dfine.imaging.decode`; these tests feed the colour modes and file types where two
decoders could disagree (float, 16- and 32-bit, palette, CMYK, grey with alpha, 1-bit, EXIF rotation, a 1x1
image, GIF/PGM/PPM) through each reading path and compare what comes out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from dfine.data.images import load_image as training_load
from dfine.data.resolve import resolve_dataset
from dfine.imaging.decode import load_image as predict_load
from dfine.imaging.inputs import standardize_image
from dfine.processing.processor import DFineImageProcessor
from dfine.runtime.onnx import preprocess

_RNG = np.random.default_rng(7)
# a float picture holding the values where decoders go wrong: 0.5 (black when truncated), 1.0, 0, and noise
_FLOAT = np.concatenate([np.array([[0.5, 1.0, 0.0, 0.25]], np.float32),
                         _RNG.random((5, 4), dtype=np.float32)]).astype(np.float32)


def _odd_pictures() -> dict[str, Image.Image]:
    """File name -> picture, each written in that file's format by :func:`_write`."""
    noise = Image.fromarray(_RNG.integers(0, 256, (12, 9, 3), dtype=np.uint8))
    rotated = Image.fromarray(_RNG.integers(0, 256, (10, 16, 3), dtype=np.uint8))
    deep = Image.fromarray((_RNG.integers(0, 65536, (7, 6))).astype(np.uint16))
    wide = Image.fromarray((_RNG.integers(0, 2**20, (7, 6))).astype(np.int32), mode="I")
    return {
        "float.tif": Image.fromarray(_FLOAT, mode="F"),
        "deep16.png": deep,
        "int32.tif": wide,
        "palette.png": noise.quantize(16),
        "cmyk.jpg": noise.convert("CMYK"),
        "cmyk_tiff.tif": noise.convert("CMYK"),
        "grey_alpha.png": noise.convert("LA"),
        "rgba.png": noise.convert("RGBA"),
        "bits.png": noise.convert("1"),
        "exif.jpg": rotated,
        "single.png": Image.new("RGB", (1, 1), (12, 200, 77)),
        "anim.gif": noise.convert("P"),
        "grey.pgm": noise.convert("L"),
        "colour.ppm": noise,
    }


def _write(folder: Path, name: str, picture: Image.Image) -> Path:
    path = folder / name
    if name == "exif.jpg":
        exif = picture.getexif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the stored pixels are sideways
        picture.save(path, exif=exif.tobytes(), quality=95)
    elif name == "grey_alpha.png":
        alpha = Image.fromarray(np.tile(np.array([0, 128, 255], np.uint8), 36)[:108].reshape(12, 9))
        picture.putalpha(alpha)
        picture.save(path)
    else:
        picture.save(path)
    return path


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A YOLO data set whose train images are the odd pictures (one box each), and the files by name."""
    root = tmp_path_factory.mktemp("odd")
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    files = {}
    for name, picture in _odd_pictures().items():  # every stem differs: each image has its own label file
        files[name] = _write(root / "images" / "train", name, picture)
        (root / "labels" / "train" / f"{Path(name).stem}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    Image.new("RGB", (8, 8)).save(root / "images" / "val" / "v.png")
    (root / "labels" / "val" / "v.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    data = root / "data.yaml"
    data.write_text(json.dumps({"train": "images/train", "val": "images/val", "names": ["thing"]}))
    return data, files


def _training_pixels(data: Path) -> dict[Path, np.ndarray]:
    """Each train image as the data set yields it before augmentation: (H, W, 3) uint8."""
    dataset = resolve_dataset(data).build("train", transforms=None)
    pixels = {}
    for i in range(len(dataset)):
        image, _ = dataset.load_item(i)
        pixels[Path(dataset.index.records[i].path)] = image.permute(1, 2, 0).numpy()
    return pixels


def _processor_pixels(image) -> np.ndarray:
    """The processor's ``pixel_values`` of one image at its own size, back in 0..255 (float input is kept in float
    by the processor: rounded here the way the decoder rounds)."""
    values = DFineImageProcessor(do_resize=False)(image, return_tensors="np")["pixel_values"][0]
    return np.rint(values.transpose(1, 2, 0).astype(np.float64) * 255).astype(np.uint8)


def _runtime_pixels(image) -> np.ndarray:
    """The torch-free runtime's input for one image at its own size, back in 0..255."""
    picture = standardize_image(image)
    size = picture.shape[:2] if isinstance(picture, np.ndarray) else (picture.height, picture.width)
    values = preprocess([picture], size)[0]
    return np.rint(values.transpose(1, 2, 0).astype(np.float64) * 255).astype(np.uint8)


def test_training_lists_every_odd_file(odd_dataset) -> None:
    data, files = odd_dataset
    assert set(_training_pixels(data)) == set(files.values())  # .gif, .pgm and .ppm are read, not left out


@pytest.mark.parametrize("name", sorted(_odd_pictures()))
def test_training_and_prediction_read_the_same_pixels(odd_dataset, name) -> None:
    data, files = odd_dataset
    path = files[name]
    training = _training_pixels(data)[path]
    predicted = np.asarray(predict_load(path))
    assert predicted.dtype == np.uint8 and predicted.shape[2] == 3
    assert np.array_equal(training, predicted), name
    assert np.array_equal(training_load(path).permute(1, 2, 0).numpy(), predicted)
    assert np.array_equal(_processor_pixels(path), predicted)  # a path given to the processor or the predictor
    assert np.array_equal(_processor_pixels(str(path)), predicted)
    assert np.array_equal(_runtime_pixels(path), predicted)
    if name != "exif.jpg":  # a picture in memory is taken as it is: only files are turned upright
        with Image.open(path) as opened:
            opened.load()
            assert np.array_equal(_processor_pixels(opened), predicted), name
            assert np.array_equal(_runtime_pixels(opened), predicted), name


def test_exif_rotation_is_applied_everywhere(odd_dataset) -> None:
    _, files = odd_dataset
    with Image.open(files["exif.jpg"]) as stored:
        upright = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    assert upright.shape[:2] == (16, 10)
    assert np.array_equal(np.asarray(predict_load(files["exif.jpg"])), upright)


def test_float_half_is_mid_grey_not_black(odd_dataset) -> None:
    """0.5 in a float picture is 128 (0..1 scaled to 0..255 and rounded), whichever path reads it."""
    data, files = odd_dataset
    path = files["float.tif"]
    expected = np.rint(_FLOAT.astype(np.float64) * 255).astype(np.uint8)
    assert expected[0, 0] == 128
    for pixels in (_training_pixels(data)[path], np.asarray(predict_load(path))):
        assert np.array_equal(pixels[:, :, 0], expected) and np.array_equal(pixels[:, :, 1], expected)
    # the same values as a float array (no file): the processor keeps them in float, which rounds to those pixels
    assert np.array_equal(_processor_pixels(_FLOAT), np.repeat(expected[:, :, None], 3, axis=2))
    assert np.array_equal(_runtime_pixels(_FLOAT), np.repeat(expected[:, :, None], 3, axis=2))

"""Image loading and listing: colour conversions, EXIF orientation, and one-line errors naming the path."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from dfine.errors import DFineError, InputFileError
from dfine.imaging.decode import load_image
from dfine.imaging.sources import list_images, read_images


def _image(height: int = 20, width: int = 30, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _assert_user_error(info: pytest.ExceptionInfo, path) -> None:
    assert isinstance(info.value, DFineError)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_load_rgb_png_is_lossless(tmp_path):
    image = _image()
    image.save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    assert loaded.mode == "RGB" and np.array_equal(np.asarray(loaded), np.asarray(image))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "1"])
def test_load_converts_modes_to_rgb(tmp_path, mode):
    source = _image().convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    source.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == source.size
    # Alpha is dropped, not composited: the stored colour values come through unchanged.
    assert np.array_equal(np.asarray(loaded), np.asarray(Image.open(path).convert("RGB")))


def test_palette_with_transparency_loads_without_warning(tmp_path):
    image = _image().convert("P")
    image.info["transparency"] = 0
    image.save(tmp_path / "t.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tmp_path / "t.png").mode == "RGB"


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 109).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    loaded = np.asarray(load_image(tmp_path / "deep.png"))[:, :, 0]
    assert loaded.max() >= 250 and 0 < np.median(loaded) < 255  # 65291 -> 254, not clipped


def test_exif_orientation_is_applied(tmp_path):
    image = _image(20, 40)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "rotated.jpg").size == (20, 40)
    assert load_image(tmp_path / "rotated.jpg", exif_transpose=False).size == (40, 20)


def test_load_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(InputFileError, match="no such file") as info:
        load_image(missing)
    _assert_user_error(info, missing)

    with pytest.raises(InputFileError, match="folder") as info:
        load_image(tmp_path)
    _assert_user_error(info, tmp_path)

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputFileError, match="not an image") as info:
        load_image(corrupt)
    _assert_user_error(info, corrupt)

    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(InputFileError) as info:
        load_image(text)
    _assert_user_error(info, text)

    buffer = io.BytesIO()
    _image(200, 300).save(buffer, format="JPEG", quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InputFileError, match="truncated") as info:
        load_image(truncated)
    _assert_user_error(info, truncated)


def test_jpeg_missing_only_its_end_marker_loads_like_the_complete_file(tmp_path):
    # an interrupted copy often loses just the last two bytes: every pixel is still there (the data loader
    # accepts such files with a warning, so predicting on them must work too)
    buffer = io.BytesIO()
    _image(200, 300).save(buffer, format="JPEG", quality=95)
    complete, cut = tmp_path / "complete.jpg", tmp_path / "cut.jpg"
    complete.write_bytes(buffer.getvalue())
    cut.write_bytes(buffer.getvalue()[:-2])
    assert np.array_equal(np.asarray(load_image(cut)), np.asarray(load_image(complete)))


@pytest.fixture()
def image_folder(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.jpg", "A.PNG", "c.JpEg", "sub/d.png", "sub/e.webp"):
        _image().save(folder / name, format="JPEG" if name.lower().endswith(("jpg", "jpeg")) else None)
    (folder / "labels.txt").write_text("not an image")
    (folder / "._b.jpg").write_bytes(b"macOS resource fork")
    (folder / ".ipynb_checkpoints").mkdir()
    _image().save(folder / ".ipynb_checkpoints" / "b-checkpoint.png")  # a stale copy, not an input
    return folder


def test_list_folder_sorted_non_recursive_by_default(image_folder):
    assert [p.name for p in list_images(image_folder)] == ["A.PNG", "b.jpg", "c.JpEg"]
    recursive = [p.relative_to(image_folder).as_posix() for p in list_images(image_folder, recursive=True)]
    assert recursive == ["A.PNG", "b.jpg", "c.JpEg", "sub/d.png", "sub/e.webp"]
    # a folder that is itself below a hidden one (~/.cache/...) is still listed
    assert [p.name for p in list_images(image_folder / ".ipynb_checkpoints")] == ["b-checkpoint.png"]


def test_list_single_file_and_glob(image_folder):
    assert list_images(image_folder / "b.jpg") == [image_folder / "b.jpg"]
    assert [p.name for p in list_images(str(image_folder / "*"))] == ["A.PNG", "b.jpg", "c.JpEg"]
    assert [p.name for p in list_images(str(image_folder / "**" / "*.png"))] == ["d.png"]


def test_list_errors_name_the_path(image_folder, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(InputFileError, match="no such file or folder") as info:
        list_images(missing)
    _assert_user_error(info, missing)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputFileError, match="no image files") as info:
        list_images(empty)
    _assert_user_error(info, empty)

    with pytest.raises(InputFileError, match="subfolders") as info:
        list_images(image_folder / "..", recursive=False)  # images only below "images/"

    pattern = str(tmp_path / "*.bmp")
    with pytest.raises(InputFileError, match="nothing matches this pattern") as info:
        list_images(pattern)
    _assert_user_error(info, pattern)

    text_only = str(image_folder / "*.txt")
    with pytest.raises(InputFileError, match="no image files match") as info:
        list_images(text_only)
    _assert_user_error(info, text_only)


def test_read_images_hands_back_errors_in_order(tmp_path):
    _image().save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    _image(seed=1).save(tmp_path / "c.png")
    results = list(read_images([tmp_path / "a.png", str(tmp_path / "b.jpg"), tmp_path / "c.png"]))
    assert [path.name for path, _ in results] == ["a.png", "b.jpg", "c.png"]
    assert isinstance(results[0][1], Image.Image) and isinstance(results[2][1], Image.Image)
    error = results[1][1]
    assert isinstance(error, InputFileError) and error.path == str(tmp_path / "b.jpg") and "not an image" in str(error)


def test_unconvertible_colour_mode_names_the_file(tmp_path, monkeypatch):
    import dfine.imaging.decode

    def refuse(image):
        raise DFineError("cannot convert an image in colour mode 'La' to RGB")

    _image().save(tmp_path / "a.png")
    monkeypatch.setattr(dfine.imaging.decode, "to_rgb", refuse)
    with pytest.raises(InputFileError, match="colour mode 'La'") as info:
        load_image(tmp_path / "a.png")
    _assert_user_error(info, tmp_path / "a.png")
    # A folder run skips such a file like any other unreadable one, rather than stopping at it.
    assert isinstance(next(read_images([tmp_path / "a.png"]))[1], InputFileError)


def test_a_photo_of_an_unread_type_is_named_with_one_line_everywhere(tmp_path):
    """A .heic that Pillow cannot open: the decoder, a folder listing and a training data set say the same line."""
    from dfine.imaging.formats import unread_image_problem

    folder = tmp_path / "phone"
    folder.mkdir()
    heic = folder / "IMG_1.HEIC"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(32))
    problem = unread_image_problem(heic)
    assert problem.startswith(".heic is not an image type dfine reads (convert it to one of ") and ".gif" in problem
    with pytest.raises(InputFileError) as info:
        load_image(heic)
    assert info.value.problem == problem
    with pytest.raises(InputFileError, match="no image files") as info:
        list_images(folder)
    assert f"1 left out: {problem}" in str(info.value)
    _image().save(folder / "a.png")
    left_out: list = []
    assert list_images(folder, left_out=left_out) == [folder / "a.png"] and left_out == [heic]

"""dfine.imaging.download and URL inputs: an image URL reads as the same file on disk does, and a failed download is one
line naming the URL (served locally: tests never reach the internet)."""

from __future__ import annotations

import numpy as np
import pytest
from hf_oracle import natural_images
from httphelpers import closed_port_url, serve

import dfine
from dfine.errors import DFineError, InputFileError
from dfine.imaging.decode import load_image
from dfine.imaging.download import download, is_url, url_file_name
from dfine.imaging.inputs import standardize_image


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    natural_images(1, 96, seed=2)[0].save(folder / "street.jpg")
    natural_images(1, 80, seed=3)[0].save(folder / "photo", format="PNG")
    (folder / "notes.txt").write_text("not a picture")
    (folder / "empty.jpg").write_bytes(b"")
    with serve(folder, {"photo": "image/png"}) as base:
        yield folder, base


def test_is_url() -> None:
    assert is_url("https://example.com/a.jpg") and is_url("HTTP://example.com/a")
    assert not is_url("street.jpg") and not is_url("ftp://example.com/a.jpg") and not is_url("https://")
    from pathlib import Path

    assert not is_url(Path("http://x/a.jpg"))  # a Path is a path, whatever it spells


@pytest.mark.parametrize("url, content_type, name", [
    ("https://x.org/img/street.jpg?size=large", None, "street.jpg"),
    ("https://x.org/a%20b.png", "image/png", "a_b.png"),
    ("https://x.org/photo?id=3", "image/jpeg; charset=binary", "photo.jpg"),
    ("https://x.org/clip", "video/mp4", "clip.mp4"),
    # a script's or versioned name: without a picture extension a video would be read as an image
    ("https://x.org/watch.php?v=3", "video/mp4", "watch.php.mp4"),
    ("https://x.org/frame.v2", "image/png", "frame.v2.png"),
    ("https://x.org/a.tar", "application/x-tar", "a.tar"),
    ("https://x.org/con.jpg", None, "_con.jpg"),  # Windows device names
    ("https://x.org/NUL", "image/png", "_NUL.png"),
    ("https://x.org/com1.tar.mp4", None, "_com1.tar.mp4"),
    ("https://x.org/console.jpg", None, "console.jpg"),
    # types that mimetypes names with an extension no reader takes (.mpv), or with none
    ("https://x.org/clip", "video/x-matroska", "clip.mkv"),
    ("https://x.org/clip", "video/mp2t", "clip.ts"),
    ("https://x.org/clip", "video/3gpp", "clip.3gp"),
    ("https://x.org/photo", "image/x-ms-bmp", "photo.bmp"),
    ("https://x.org/", None, "download"),
    ("https://x.org/../..", "image/png", "download.png"),
])
def test_url_file_name(url, content_type, name) -> None:
    assert url_file_name(url, content_type) == name


def test_a_long_name_is_shortened_keeping_its_extension() -> None:
    """CDN names can be longer than the 255 bytes a file name may have: the download failed with 'File name too
    long', reported as a download that broke off."""
    assert url_file_name("https://x.org/" + "a" * 300 + ".jpg") == "a" * 116 + ".jpg"
    assert url_file_name("https://x.org/" + "a" * 300, "video/mp4") == "a" * 116 + ".mp4"
    assert len(url_file_name("https://x.org/" + "a" * 300 + "." + "b" * 40)) == 120
    assert url_file_name("https://x.org/" + "街" * 100 + ".jpg") == "街" * 38 + ".jpg"  # bytes, not characters


def test_an_image_url_reads_as_the_file_does(site) -> None:
    folder, base = site
    expected = np.asarray(load_image(folder / "street.jpg"))
    assert np.array_equal(np.asarray(load_image(f"{base}/street.jpg")), expected)
    # what the Predictor and the torch-free runtime read inputs with
    assert np.array_equal(np.asarray(standardize_image(f"{base}/street.jpg")), expected)
    # the processor and the Predictor take URLs like paths
    processor = dfine.DFineImageProcessor(size={"height": 64, "width": 64})
    assert processor(images=f"{base}/street.jpg", return_tensors="pt")["pixel_values"].equal(
        processor(images=str(folder / "street.jpg"), return_tensors="pt")["pixel_values"])


def test_the_content_type_names_a_path_without_extension(site, tmp_path) -> None:
    _, base = site
    path = download(f"{base}/photo", tmp_path)
    assert path.name == "photo.png" and load_image(path).size == (80, 80)


@pytest.mark.parametrize("container, extension", [("mp4", ".mp4"), ("matroska", ".mkv"), ("avi", ".avi"),
                                                  ("mpegts", ".ts")])
def test_a_video_served_as_octet_stream_is_named_by_its_content(tmp_path, container, extension) -> None:
    """Neither the URL nor the served type says 'video': its bytes do, and the extension decides the reader."""
    av = pytest.importorskip("av")
    site = tmp_path / "site"
    site.mkdir()
    with av.open(str(site / "clip"), "w", format=container) as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for picture in natural_images(2, 96, seed=1):
            frame = av.VideoFrame.from_image(picture.resize((64, 48)))
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with serve(site, {"clip": "application/octet-stream"}) as base:
        path = download(f"{base}/clip", tmp_path)
    assert path.name == "clip.bin" + extension and path.is_file()


@pytest.mark.parametrize("name, problem", [
    ("missing.jpg", "could not download (HTTP 404"),
    ("empty.jpg", "the server sent an empty file"),
])
def test_download_errors_are_one_line(site, name, problem) -> None:
    _, base = site
    with pytest.raises(DFineError) as caught:
        load_image(f"{base}/{name}")
    message = str(caught.value)
    assert message.startswith(f"{base}/{name}: {problem}") and "\n" not in message


def test_an_unreachable_server_is_one_line() -> None:
    url = closed_port_url()
    with pytest.raises(DFineError, match=r"^http://127\.0\.0\.1:\d+/street\.jpg: could not download \(") as caught:
        load_image(url)
    assert "\n" not in str(caught.value)


def test_a_url_that_is_not_an_image_names_the_url(site) -> None:
    _, base = site
    with pytest.raises(InputFileError) as caught:
        load_image(f"{base}/notes.txt")
    assert caught.value.path == f"{base}/notes.txt" and "not an image file" in str(caught.value)

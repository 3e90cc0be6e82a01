"""Pascal VOC XML data sets: the layouts, difficult objects as crowd regions, the coordinate convention, the class
list, and a one-line report naming the file for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datahelpers import write_image

from dfine.data import check_dataset, resolve_dataset
from dfine.data.holdout import hold_out_validation
from dfine.data.voc import parse_xml
from dfine.engine.evaluator import CocoEvaluator
from dfine.errors import InputFileError

W, H = 64, 48


def obj(name: str, box: tuple, difficult: object = 0, extra: str = "") -> str:
    """An ``<object>`` element; ``box`` is ``(xmin, ymin, xmax, ymax)`` written as given (ints or strings)."""
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))
    return (f"<object><name>{name}</name><pose>Unspecified</pose><truncated>1</truncated>"
            f"<difficult>{difficult}</difficult>{extra}<bndbox>{coords}</bndbox></object>")


def xml(filename: str | None, objects: list[str] = (), size: tuple | None = (W, H)) -> str:
    name = f"<filename>{filename}</filename>" if filename is not None else ""
    dims = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    return f'<?xml version="1.0"?>\n<annotation><folder>x</folder>{name}{dims}{"".join(objects)}</annotation>'


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def devkit(root: Path, splits: dict[str, list[str]], objects: dict[str, list[str]] | None = None) -> Path:
    """A devkit layout: one image and XML file per id, ``ImageSets/Main/<split>.txt`` per entry of ``splits``."""
    ids = sorted({i for ids in splits.values() for i in ids} | set(objects or {}))
    for image_id in ids:
        write_image(root / "JPEGImages" / f"{image_id}.jpg", W, H)
        found = (objects or {}).get(image_id, [obj("dog", (1, 1, 20, 30))])
        write(root / "Annotations" / f"{image_id}.xml", xml(f"{image_id}.jpg", found))
    for split, listed in splits.items():
        write(root / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{i}\n" for i in listed))
    return root


def problems_of(root: Path) -> list[str]:
    return check_dataset(root, progress=False, raise_on_problems=False).problems


# ------------------------------------------------------------------------------------------------------ layouts
def test_devkit_layout_uses_the_split_lists_and_ignores_trainval_and_per_class_lists(tmp_path: Path) -> None:
    root = devkit(tmp_path / "VOC2007", {"train": ["a", "b"], "val": ["c"], "trainval": ["a", "b", "c"],
                                         "test": ["d"]},
                  {"a": [obj("dog", (1, 1, 20, 30)), obj("cat", (30, 10, 60, 40))]})
    write(root / "ImageSets" / "Main" / "dog_train.txt", "a  1\nb -1\n")  # per-class list: not a split
    spec = resolve_dataset(root)
    assert spec.format == "voc" and list(spec.splits) == ["train", "val", "test"]
    assert spec.names == ["cat", "dog"]  # sorted names found in every split
    assert [r.file_name for r in spec.index("train").records] == ["JPEGImages/a.jpg", "JPEGImages/b.jpg"]
    report = check_dataset(spec, progress=False)
    assert any("trainval.txt ignored" in line for line in report.repairs)
    assert report.splits["train"].boxes_per_class == (1, 2) and report.splits["test"].images == 1


def test_trainval_is_the_training_split_when_there_is_no_train_list(tmp_path: Path) -> None:
    root = devkit(tmp_path / "d", {"trainval": ["a", "b"], "test": ["c"]})
    spec = resolve_dataset(root)
    assert list(spec.splits) == ["train", "test"] and len(spec.index("train").records) == 2


def test_an_image_listed_in_train_and_val_is_a_warning(tmp_path: Path) -> None:
    root = devkit(tmp_path / "d", {"train": ["a", "b"], "val": ["b", "c"]})
    report = check_dataset(root, progress=False)
    shared = root / "JPEGImages" / "b.jpg"
    assert report.ok and report.warnings == [
        f"1 val images are also training images (e.g. {shared}): validation scores will be optimistic"]


def test_without_lists_every_xml_file_is_the_training_split_and_val_split_holds_some_out(tmp_path: Path) -> None:
    root = devkit(tmp_path / "d", {"x": ["a", "b", "c", "d"]})
    (root / "ImageSets").rename(tmp_path / "elsewhere")
    spec = resolve_dataset(root)
    assert list(spec.splits) == ["train"]
    assert any("every XML file in Annotations/ used as the training split" in n for n in spec.notes)
    held = hold_out_validation(spec, 0.25)
    assert len(held.index("train").records) == 3 and len(held.index("val").records) == 1


def test_cvat_export_labelmap_order_and_decimal_coordinates(tmp_path: Path) -> None:
    root = tmp_path / "cvat"
    write_image(root / "JPEGImages" / "frame_1.png", W, H)
    # datumaro writes pixel edges as decimals: 0.0 is the image's left edge, not a column before it
    write(root / "Annotations" / "frame_1.xml", xml("frame_1.png", [obj("zebra", ("0.0", "2.5", "10.0", "12.0")),
                                                                   obj("ant", ("20.0", "20.0", "64.0", "48.0"))]))
    write(root / "ImageSets" / "Main" / "default.txt", "frame_1\n")
    write(root / "labelmap.txt", "# label:color_rgb:parts:actions\nbackground:0,0,0::\nzebra:1,2,3::\nant:4,5,6::\n")
    spec = resolve_dataset(root)
    assert spec.names == ["zebra", "ant"]  # the list's order, background left out
    report = check_dataset(spec, progress=False)
    assert report.ok and not [r for r in report.repairs if "clipped" in r]
    record = spec.index("train").records[0]
    np.testing.assert_array_equal(record.boxes, [[0, 2.5, 10, 12], [20, 20, 64, 48]])
    assert record.labels.tolist() == [0, 1]


def test_roboflow_split_folders_with_xml_beside_the_images(tmp_path: Path) -> None:
    root = tmp_path / "rf"
    for split, stems in (("train", ["a", "b"]), ("valid", ["c"])):
        for stem in stems:
            write_image(root / split / f"{stem}_jpg.rf.123.jpg", W, H)
            write(root / split / f"{stem}_jpg.rf.123.xml", xml(f"{stem}_jpg.rf.123.jpg", [obj("car", (5, 5, 30, 30))]))
    write(root / "README.roboflow.txt", "exported")
    spec = resolve_dataset(root)
    assert list(spec.splits) == ["train", "val"] and spec.names == ["car"]
    assert len(spec.index("train").records) == 2 and len(spec.index("val").records) == 1


def test_labelimg_folder_class_list_order_and_images_without_xml(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_image(root / "a.jpg", W, H)
    write_image(root / "b.jpg", W, H)  # never annotated: LabelImg wrote no XML
    write(root / "a.xml", xml("a.jpg", [obj("person", (1, 1, 10, 10))]))
    write(root / "classes.txt", "person\nbicycle\n")
    spec = resolve_dataset(root)
    assert list(spec.splits) == ["train"] and spec.names == ["person", "bicycle"]
    report = check_dataset(spec, progress=False)
    assert any("image without an XML file left out" in line and "b.jpg" in line for line in report.repairs)
    assert report.warnings == ["classes without any training box: bicycle"]


def test_label_studio_annotations_with_an_images_folder(tmp_path: Path) -> None:
    root = tmp_path / "ls"
    write_image(root / "images" / "1d7d-IMG_1.jpg", W, H)
    write(root / "Annotations" / "1d7d-IMG_1.xml", xml("1d7d-IMG_1.jpg", [obj("plate", (3, 4, 30, 20))]))
    assert check_dataset(root, progress=False).splits["train"].boxes == 1


def test_annotations_without_an_image_folder_is_one_line(tmp_path: Path) -> None:
    write(tmp_path / "d" / "Annotations" / "a.xml", xml("a.jpg"))
    with pytest.raises(InputFileError, match=r"has VOC annotations in Annotations/ but no image folder beside it"):
        resolve_dataset(tmp_path / "d")


@pytest.mark.parametrize("lists, message", [
    ({"labels.txt": "a\nb\n", "classes.txt": "b\na\n"}, "class lists disagree: labels.txt, classes.txt"),
    ({"labels.txt": "a\nb\na\n"}, "class 'a' is listed twice"),
    ({"labels.txt": "\n\n"}, "the class list is empty"),
])
def test_bad_class_lists_are_one_line(tmp_path: Path, lists: dict[str, str], message: str) -> None:
    root = devkit(tmp_path / "d", {"train": ["a"]})
    for name, text in lists.items():
        write(root / name, text)
    with pytest.raises(InputFileError, match=message):
        resolve_dataset(root)


# ------------------------------------------------------------------------------------- difficult objects, boxes
def test_difficult_objects_are_crowd_regions_not_targets_and_ignored_by_ap(tmp_path: Path) -> None:
    easy, hard = (1, 1, 20, 30), (31, 11, 60, 40)
    root = devkit(tmp_path / "d", {"train": ["a"]}, {"a": [obj("dog", easy), obj("dog", hard, difficult=1)]})
    spec = resolve_dataset(root)
    record = spec.index("train").records[0]
    assert record.iscrowd.tolist() == [False, True]
    dataset = spec.build("train")
    _, target = dataset.load_item(0)
    assert target["boxes"].tolist() == [[0, 0, 20, 30]]  # only the ordinary object is trained on
    truth = dataset.coco_ground_truth()
    assert [a["iscrowd"] for a in truth["annotations"]] == [0, 1]

    def ap(boxes: list, scores: list) -> float:
        evaluator = CocoEvaluator(truth)
        evaluator.update({0: {"boxes": np.array(boxes, dtype=np.float32), "scores": np.array(scores),
                              "labels": np.zeros(len(boxes), dtype=np.int64)}})
        return evaluator.compute().AP

    on_easy, on_hard = [0, 0, 20, 30], [30, 10, 60, 40]
    assert ap([on_easy], [0.9]) == pytest.approx(1.0)
    assert ap([on_hard, on_easy], [0.95, 0.9]) == pytest.approx(1.0)  # a higher-scored hit on it costs nothing
    assert ap([on_hard], [0.95]) == pytest.approx(0.0)  # and finding it alone earns nothing
    # the same box as an ordinary object: the detection on it counts, and a missed one costs
    plain = devkit(tmp_path / "p", {"train": ["a"]}, {"a": [obj("dog", easy), obj("dog", hard, difficult="0")]})
    truth = resolve_dataset(plain).build("train").coco_ground_truth()
    assert ap([on_easy], [0.9]) < 0.6


def test_integer_coordinates_are_one_based_inclusive_pixels(tmp_path: Path) -> None:
    # xmin=1..xmax=W is the whole image; a box of the first column alone is one pixel wide
    root = devkit(tmp_path / "d", {"train": ["a"]},
                  {"a": [obj("dog", (1, 1, W, H)), obj("dog", (1, 5, 1, 9)), obj("cat", (11, 21, 30, 40))]})
    report = check_dataset(root, progress=False)
    assert report.ok and not report.repairs
    np.testing.assert_array_equal(report.indexes["train"].records[0].boxes,
                                  [[0, 0, W, H], [0, 4, 1, 9], [10, 20, 30, 40]])


def test_one_decimal_coordinate_makes_the_whole_file_pixel_edges(tmp_path: Path) -> None:
    root = devkit(tmp_path / "d", {"train": ["a"]},
                  {"a": [obj("dog", (5, 5, 20, 30)), obj("dog", (1, 1, 2.5, 9)), obj("dog", (7, 1, 7, 9))]})
    report = check_dataset(root, progress=False)
    np.testing.assert_array_equal(report.indexes["train"].records[0].boxes, [[5, 5, 20, 30], [1, 1, 2.5, 9]])
    # as pixel edges xmin == xmax is no box at all (with integer pixels it is one column: see above)
    assert any("zero-area box dropped" in r and "a.xml object 3" in r for r in report.repairs)


def test_boxes_over_the_edge_are_clipped_and_reported(tmp_path: Path) -> None:
    root = devkit(tmp_path / "d", {"train": ["a"]}, {"a": [obj("dog", (1, 1, W + 10, 30))]})
    report = check_dataset(root, progress=False)
    assert report.ok and any("box clipped to its image" in r and "a.xml object 1" in r for r in report.repairs)
    assert report.indexes["train"].records[0].boxes.tolist() == [[0, 0, W, 30]]


def test_image_found_by_the_xml_name_or_the_base_name_of_a_windows_path(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for stem in ("a", "b"):
        write_image(root / "JPEGImages" / f"{stem}.JPG", W, H)
    write(root / "Annotations" / "a.xml", xml("a", [obj("dog", (1, 1, 9, 9))]))  # no extension written
    write(root / "Annotations" / "b.xml", xml(r"C:\Users\me\Pictures\b.JPG", [obj("dog", (1, 1, 9, 9))]))
    report = check_dataset(root, progress=False)
    assert report.ok and report.splits["train"].images == 2
    assert any("image found by the XML file's name" in r and "a.xml" in r and "b.xml" not in r
               for r in report.repairs)


def test_a_missing_size_is_read_from_the_image(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_image(root / "JPEGImages" / "a.jpg", W, H)
    write(root / "Annotations" / "a.xml", xml("a.jpg", [obj("dog", (1, 1, 9, 9))], size=None))
    report = check_dataset(root, progress=False)
    record = report.indexes["train"].records[0]
    assert report.ok and (record.width, record.height) == (W, H)
    assert any("missing image size read from the image file" in r and "a.xml" in r for r in report.repairs)


# --------------------------------------------------------------------------------------------------- bad input
BAD_FILES = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00", "b.xml: not valid XML (not well-formed (invalid token) at line 1"),
    "unclosed": (b"<annotation><filename>b.jpg</filename><size>", "b.xml: not valid XML (no element found at line 1"),
    "entities": ((b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
                  b"<annotation><filename>&lol2;</filename></annotation>"),
                 "b.xml: has a <!DOCTYPE> declaration, which Pascal VOC files never have: refused"),
    "cvat xml": (b"<annotations><version>1.1</version></annotations>",
                 "b.xml: not a Pascal VOC annotation (the root element is <annotations>, not <annotation>)"),
    "size text": (xml("b.jpg", size=("wide", H)).encode(),
                  "b.xml: <size> <width> must be a whole number of pixels, got 'wide'"),
    "xmin > xmax": (xml("b.jpg", [obj("dog", (1, 1, 9, 9)), obj("dog", (30, 1, 20, 9))]).encode(),
                    "b.xml object 2: 'dog': xmin 30 > xmax 20"),
    "no name": (xml("b.jpg", ["<object><name> </name><bndbox/></object>"]).encode(),
                "b.xml object 1: has no class <name>"),
    "no bndbox": (xml("b.jpg", ["<object><name>dog</name></object>"]).encode(),
                  "b.xml object 1: 'dog' has no <bndbox>"),
    "no ymax": (xml("b.jpg", [obj("dog", (1, 1, 9, 9)).replace("<ymax>9</ymax>", "")]).encode(),
                "b.xml object 1: 'dog': <bndbox> has no <ymax>"),
    "text coordinate": (xml("b.jpg", [obj("dog", (1, "one", 9, 9))]).encode(),
                        "b.xml object 1: 'dog': <ymin> 'one' is not a number"),
    "difficult": (xml("b.jpg", [obj("dog", (1, 1, 9, 9), difficult="maybe")]).encode(),
                  "b.xml object 1: 'dog': <difficult> must be 0 or 1, got 'maybe'"),
    "outside": (xml("b.jpg", [obj("dog", (100, 1, 120, 9))]).encode(),
                "b.xml object 1: box xyxy (99, 0, 120, 9) lies completely outside the 64x48 image"),
    "no image": (xml("gone.jpg", [obj("dog", (1, 1, 9, 9))]).encode(), "b.xml: its image"),
    "size mismatch": (xml("b.jpg", [obj("dog", (1, 1, 9, 9))], size=(128, 96)).encode(),
                      "b.jpg: image is 64x48 but the annotations were made for 128x96"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_each_bad_file_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    content, message = BAD_FILES[case]
    root = devkit(tmp_path / "d", {"train": ["a", "b"]})
    (root / "Annotations" / "b.xml").write_bytes(content)
    if case == "no image":
        (root / "JPEGImages" / "b.jpg").unlink()
    problems = problems_of(root)
    assert len(problems) == 1 and "\n" not in problems[0]
    assert message in problems[0]
    assert str(root / "Annotations" / "b.xml") in problems[0] or str(root / "JPEGImages" / "b.jpg") in problems[0]


def test_every_problem_of_every_file_and_list_is_listed(tmp_path: Path) -> None:
    root = devkit(tmp_path / "d", {"train": ["a", "b", "c", "missing"], "val": ["e"]},
                  {"a": [obj("dog", (1, 1, 9, 9)), obj("unicorn", (1, 1, 9, 9))], "b": [obj("dog", (9, 1, 2, 9))],
                   "e": [obj("dog", (1, 1, 9, 9))]})
    write(root / "labels.txt", "dog\ncat\n")
    (root / "Annotations" / "c.xml").write_text("<annotation>")
    (root / "Annotations" / "missing.xml").unlink()
    report = check_dataset(root, progress=False, raise_on_problems=False)
    assert len(report.problems) == 4
    joined = "\n".join(report.problems)
    assert f"{root / 'ImageSets' / 'Main' / 'train.txt'}:4: image 'missing' has no annotation file" in joined
    assert f"{root / 'Annotations' / 'a.xml'} object 2: class 'unicorn' is not in the class list (dog, cat)" in joined
    assert f"{root / 'Annotations' / 'b.xml'} object 1: 'dog': xmin 9 > xmax 2" in joined
    assert f"{root / 'Annotations' / 'c.xml'}: not valid XML" in joined


def test_parse_xml_never_expands_entities(tmp_path: Path) -> None:
    bomb = write(tmp_path / "bomb.xml", '<!DOCTYPE a [<!ENTITY x "xxxxxxxxxx">]><annotation>&x;</annotation>')
    with pytest.raises(InputFileError, match="DOCTYPE"):
        parse_xml(bomb)
    external = write(tmp_path / "ext.xml", '<!DOCTYPE a SYSTEM "file:///etc/passwd"><annotation/>')
    with pytest.raises(InputFileError, match="DOCTYPE"):
        parse_xml(external)
    undeclared = write(tmp_path / "und.xml", "<annotation>&x;</annotation>")
    with pytest.raises(InputFileError, match="undefined entity"):
        parse_xml(undeclared)
    assert parse_xml(write(tmp_path / "ok.xml", "\ufeff<annotation><a>1</a></annotation>")).find("a").text == "1"


# ------------------------------------------------------------------------------------------------- end to end
def test_check_prints_the_class_counts_and_training_accepts_the_data_set(tmp_path: Path, capsys) -> None:
    import dfine
    from dfine.cli.main import main

    boxes = {f"{i:06d}": [obj("dog", (1 + 4 * i, 1, 30 + 4 * i, 30)), obj("cat", (33, 11, 60, 40), difficult=i % 2)]
             for i in range(3)}
    root = devkit(tmp_path / "VOC", {"train": list(boxes)[:2], "val": list(boxes)[2:]}, boxes)
    preview = tmp_path / "preview.jpg"
    assert main(["check", "--data", str(root), "--preview", str(preview), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"Data set {root} (voc), 2 classes: 0 cat, 1 dog" in out
    assert "train: 2 images (0 without objects), 3 boxes, 1 difficult objects (ignored)" in out
    table = out.split("Boxes per class:\n", 1)[1].splitlines()
    assert table[1].split() == ["0", "cat", "1", "1"] and table[2].split() == ["1", "dog", "2", "1"]
    assert preview.is_file()
    # one step of one epoch, then an evaluation: the smallest run that reads every split as training does
    result = dfine.train(root, model="dfine-n-coco", epochs=1, batch_size=2, image_size=160, workers=0,
                         pretrained_backbone=False, num_queries=100, progress=False, output=tmp_path / "run")
    assert "AP" in result.metrics and (result.best_model / "config.json").is_file()
    config = (result.best_model / "config.json").read_text()
    assert '"cat"' in config and '"dog"' in config

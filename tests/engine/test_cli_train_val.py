"""``dfine train`` / ``dfine val`` on the command line: JSON output and one-line errors with exit status 2."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from trainhelpers import tiny_data

import dfine
from dfine.cli.main import main
from dfine.config.presets import preset_config
from dfine.model import DFineForObjectDetection


def test_val_json_prints_one_object(trained_run, tiny_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["val", "--model", str(trained_run.best_model), "--data", str(tiny_yaml), "--json",
                 "--workers", "0", "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)  # the whole of stdout is one JSON object
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "per_class_AP"):
        assert key in result
    assert set(result["per_class_AP"]) == {"circle", "square", "triangle"}
    assert result["num_images"] == 4
    # the best/ folder's preprocessor_config.json gives the training size (160), and the same weights score the
    # same as at the end of training
    assert result["AP"] == pytest.approx(trained_run.metrics["AP"], abs=1e-9)


def test_val_table_and_last_pt(trained_run, tiny_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["val", "--model", str(trained_run.last_checkpoint), "--data", str(tiny_yaml),
                 "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "COCO box metrics over 4 images" in out and "circle" in out


def test_val_output_writes_scoreable_predictions_and_pictures(trained_run, tiny_yaml: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from faster_coco_eval import COCO, COCOeval_faster

    out = tmp_path / "report"
    assert main(["val", "--model", str(trained_run.best_model), "--data", str(tiny_yaml), "--workers", "0",
                 "--output", str(out), "--threshold", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert f"uncertainty.png to {out}" in printed and "box uncertainty vs localisation error" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    records = json.loads((out / "predictions.json").read_text())
    uncertainty = json.loads((out / "uncertainty.json").read_text())
    assert uncertainty["score_threshold"] == 0.3 and uncertainty["detections"] >= 0
    for name in ("per_class_ap.png", "pr_curve.png", "confusion_matrix.png", "uncertainty.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind
    # the records are in the annotation file's own ids: scoring them against that file gives val's AP
    annotations = tiny_yaml.parent / "annotations" / "instances_val.json"
    assert {r["category_id"] for r in records} <= {1, 2, 3} and all(r["file_name"] for r in records)
    truth = COCO(str(annotations), print_function=lambda *a, **k: None)
    scored = COCOeval_faster(truth, truth.loadRes(records), iouType="bbox", print_function=lambda *a, **k: None)
    scored.evaluate()
    scored.accumulate()
    scored.summarize()
    assert scored.stats[0] == pytest.approx(metrics["AP"], abs=1e-9)
    assert metrics["AP"] == pytest.approx(trained_run.metrics["AP"], abs=1e-9)


def test_a_training_run_leaves_the_best_epochs_validation_report(trained_run, tmp_path: Path) -> None:
    """val/ in the run folder holds what dfine val --output writes, for the best epoch: the same numbers."""
    report = trained_run.output_dir / "val"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["AP"] == pytest.approx(trained_run.metrics["AP"], abs=1e-12)
    records = json.loads((report / "predictions.json").read_text())
    assert records and {r["category_id"] for r in records} <= {1, 2, 3}  # the COCO file's own ids
    for name in ("per_class_ap.png", "pr_curve.png", "confusion_matrix.png", "uncertainty.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_val_output_must_be_a_folder(tmp_path: Path, tiny_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").write_text("x")
    assert main(["val", "--model", "dfine-n-coco", "--data", str(tiny_yaml), "--output", str(tmp_path / "taken")]) == 2
    assert f"{tmp_path / 'taken'}: is a file: output needs a folder" in capsys.readouterr().err


def _two_split_yolo(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(root / "images" / split / "a.png")
        (root / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = root / "data.yaml"
    data.write_text(json.dumps({"train": "images/train", "val": "images/val", "names": ["x"]}))
    return data


def test_val_output_inside_a_yolo_image_folder_is_refused(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """YOLO image folders are searched for pictures: the report's PNGs there would become part of the data set."""
    data = _two_split_yolo(tmp_path)
    inside = tmp_path / "images" / "val" / "report"
    assert main(["val", "--model", "dfine-n-coco", "--data", str(data), "--output", str(inside)]) == 2
    assert f"{inside}: inside the image folder" in capsys.readouterr().err
    assert not inside.exists()


def test_train_output_inside_a_yolo_image_folder_is_refused(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A run folder gets train_batch0.jpg, results.png and val/*.png: inside an image folder they would be trained
    on."""
    data = _two_split_yolo(tmp_path)
    inside = tmp_path / "images" / "train" / "run"
    assert main(["train", "--model", "dfine-n", "--data", str(data), "--output", str(inside), "--epochs", "1",
                 "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{inside}: inside the image folder" in err
    assert not inside.exists()


def test_val_class_count_mismatch(tmp_path: Path, tiny_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    coco = DFineForObjectDetection(preset_config("dfine-n-coco")).save_pretrained(tmp_path / "coco80")
    assert main(["val", "--model", str(coco), "--data", str(tiny_yaml), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "the model has 80 classes but the data set" in err and "has 3 (circle, square, triangle)" in err


@pytest.mark.parametrize("content", ['{"images": [', '{"images": [], "annotations": [], "categories": []}'])
@pytest.mark.parametrize("split", ["train", "val"])
def test_val_reports_data_problems_before_the_class_count(tmp_path: Path, content: str, split: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # a broken training annotation file leaves the data set without classes; that is the problem to report, not
    # "the model has 3 classes but the data set has 0" (val takes its classes from the training file too)
    data = tiny_data(tmp_path / "data", num_train=2, num_val=2)
    train_json = tmp_path / "data" / "annotations" / "instances_train.json"
    train_json.write_text(content)
    model = DFineForObjectDetection(preset_config("dfine-n-coco", num_labels=3)).save_pretrained(tmp_path / "m")
    assert main(["val", "--model", str(model), "--data", str(data), "--split", split, "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "classes but the data set" not in err
    expected = "invalid JSON (line 1, column 13" if content.endswith("[") else "'categories' is empty"
    assert f"{train_json}: {expected}" in err


def test_train_bad_data_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path / "nope.yaml"), "--no-pretrained-backbone"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.yaml: data set path does not exist" in err


def test_train_bad_set_option(tmp_path: Path, tiny_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tiny_yaml), "--output", str(tmp_path / "x"), "--no-pretrained-backbone",
                 "--set", "warmup=3"]) == 2
    assert "unknown option(s) warmup" in capsys.readouterr().err


@pytest.mark.slow
def test_train_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tiny_data(tmp_path / "data", num_train=4, num_val=2)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--epochs", "1", "--batch-size", "2", "--image-size", "160",
                 "--output", str(out), "--workers", "0", "--no-pretrained-backbone", "--no-progress",
                 "--set", "num_queries=100", "--set", "warmup_iters=1"]) == 0
    printed = capsys.readouterr().out
    assert "linear warm-up over 1 iteration, then constant" in printed and f"best model: {out / 'best'}" in printed
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 0


@pytest.mark.parametrize(("assignment", "option"), [("lr=0.1", "--lr"), ("batch_size=4", "--batch-size"),
                                                    ("sync_bn=true", "--sync-bn")])
def test_set_refuses_what_has_its_own_option(tmp_path: Path, assignment: str, option: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path / "unused"), "--set", assignment]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dfine train: error: use the {option} option instead of --set"


def test_predictions_name_the_data_sets_category_ids(trained_run, tiny_yaml: Path, tmp_path: Path) -> None:
    """The synthetic COCO file numbers its classes 1, 2, 3: a trained model records them, and predict writes the
    data set's id beside the label index (a user scoring predictions against the COCO file needs it)."""
    coco = json.loads((tiny_yaml.parent / "annotations" / "instances_val.json").read_text())
    file_ids = [c["id"] for c in coco["categories"]]
    assert file_ids == [1, 2, 3]
    saved = json.loads((trained_run.best_model / "config.json").read_text())
    assert saved["dataset_category_ids"] == file_ids
    assert DFineForObjectDetection.from_pretrained(trained_run.best_model).config.dataset_category_ids == file_ids
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_yaml.parent / "images" / "val"), "--model", str(trained_run.best_model),
                 "--output", str(out), "--threshold", "0", "--no-progress"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert records and all(r["dataset_category_id"] == file_ids[r["category_id"]] for r in records)


def test_a_trained_model_object_is_evaluated_and_deployed_at_its_training_size(trained_run, tiny_yaml: Path) -> None:
    """best/ holds the 160-pixel training size in config.json, so a loaded model object needs no image_size."""
    import dfine

    model = DFineForObjectDetection.from_pretrained(trained_run.best_model)
    assert model.config.training_image_size == (160, 160)
    assert model.config.eval_size is None  # transformers' eval_size would change its forward: not used for this
    by_object = dfine.val(model, tiny_yaml, workers=0)
    by_folder = dfine.val(trained_run.best_model, tiny_yaml, workers=0)
    assert by_object.AP == pytest.approx(by_folder.AP, abs=1e-9) and by_object.AR100 == by_folder.AR100
    assert model.deploy().image_size == (160, 160)


def test_val_scores_the_fast_inference_form(trained_run, tiny_yaml: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--bf16/--half evaluate what a deployed model runs (optimize_for_inference at the model's size); in float32
    that form scores as the model itself, and --half-head passes the head's precision through."""
    import dfine
    import dfine.model.deploy.fast as fast

    calls: list[dict] = []
    real = fast.optimize_for_inference
    monkeypatch.setattr(fast, "optimize_for_inference", lambda *a, **k: calls.append(k) or real(*a, **k))
    exact = dfine.val(trained_run.best_model, tiny_yaml, workers=0)
    assert not calls
    deployed = dfine.val(trained_run.best_model, tiny_yaml, workers=0, dtype="float32")
    assert calls[-1]["dtype"] == torch.float32 and calls[-1]["image_size"] == (160, 160)
    assert deployed.AP == pytest.approx(exact.AP, abs=1e-6) and deployed.AR100 == pytest.approx(exact.AR100)
    assert main(["val", "--model", str(trained_run.best_model), "--data", str(tiny_yaml), "--bf16", "--half-head",
                 "--json", "--workers", "0"]) == 0
    assert calls[-1]["dtype"] == torch.bfloat16 and calls[-1]["head_dtype"] is None
    assert 0.0 <= json.loads(capsys.readouterr().out)["AP"] <= 1.0


@pytest.mark.parametrize(("argv", "message"), [
    (["--half", "--device", "cpu"], "float16 (--half) needs a CUDA device; on the CPU use bfloat16 (--bf16)"),
    (["--half-head"], "--half-head runs the head in the body's half precision: it needs --half or --bf16"),
    (["--half", "--bf16"], "choose one of --half and --bf16"),
])
def test_val_precision_options_are_checked_first(tmp_path: Path, argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # the data path does not exist: the precision problem is reported before anything is read
    assert main(["val", "--model", "dfine-n-coco", "--data", str(tmp_path / "none"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


@pytest.mark.parametrize("command", ["train", "val"])
@pytest.mark.parametrize("below", [False, True])
def test_an_output_that_is_or_is_below_a_file_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 command: str, below: bool) -> None:
    """Before the data check and the model load, not as a traceback after a whole evaluation or training set-up:
    the data and model named here do not exist, so any later check would fail on them instead."""
    (tmp_path / "taken").write_text("x")
    output = tmp_path / "taken" / "run" if below else tmp_path / "taken"
    assert main([command, "--model", "not-loaded", "--data", str(tmp_path / "nowhere.yaml"),
                 "--output", str(output)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert (f"{output}: cannot be created: part of the path is a file" if below
            else f"{output}: is a file: output needs a folder") in err


def test_val_output_of_a_segmentation_model_writes_its_masks(tmp_path: Path) -> None:
    """predictions.json of a segmentation model holds each instance's mask (COCO RLE) beside its box: scored as
    ``segm`` against the annotation file, it gives val's mask AP."""
    from faster_coco_eval import COCO, COCOeval_faster
    from seghelpers import save_tiny_segmentation_model

    data = tiny_data(tmp_path / "data", num_train=2, num_val=3, masks=True)
    model_dir = save_tiny_segmentation_model(tmp_path / "model", id2label={0: "circle", 1: "square", 2: "triangle"})
    out = tmp_path / "report"
    assert main(["val", "--model", str(model_dir), "--data", str(data), "--workers", "0", "--output",
                 str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    records = json.loads((out / "predictions.json").read_text())
    truth = COCO(str(data.parent / "annotations" / "instances_val.json"), print_function=lambda *a, **k: None)
    sizes = {img["id"]: [img["height"], img["width"]] for img in truth.dataset["images"]}
    assert len(records) == 3 * 100 and all(r["segmentation"]["size"] == sizes[r["image_id"]] for r in records)
    for iou_type, expected in (("segm", metrics["segm"]["AP"]), ("bbox", metrics["AP"])):
        scored = COCOeval_faster(truth, truth.loadRes(copy.deepcopy(records)), iouType=iou_type,
                                 print_function=lambda *a, **k: None)
        scored.evaluate()
        scored.accumulate()
        scored.summarize()
        assert scored.stats[0] == pytest.approx(expected, abs=1e-9), iou_type
    # random weights score no mask AP: the masks themselves are checked against inference's, image by image
    from faster_coco_eval.core import mask as coco_mask

    predictor = dfine.Predictor.from_pretrained(model_dir, device="cpu")
    for image in truth.dataset["images"]:
        best = max((r for r in records if r["image_id"] == image["id"]), key=lambda r: r["score"])
        [expected] = predictor.predict(data.parent / "images" / "val" / image["file_name"], threshold=0.0)
        top = int(expected["scores"].argmax())
        assert best["score"] == pytest.approx(float(expected["scores"][top]), abs=1e-3)
        mask = coco_mask.decode(best["segmentation"]).astype(bool)
        assert mask.any() and (mask != expected["masks"][top].numpy()).mean() < 0.01


def test_val_of_a_segmentation_model_in_the_fast_form_scores_its_masks(tmp_path: Path) -> None:
    """dtype (--bf16/--half, here float32) runs the deploy form, masks included: the instances written are those of
    the model itself (before, the fast form gave boxes only and the mask evaluator saw nothing)."""
    from faster_coco_eval.core import mask as coco_mask
    from seghelpers import save_tiny_segmentation_model

    data = tiny_data(tmp_path / "data", num_train=2, num_val=3, masks=True)
    model_dir = save_tiny_segmentation_model(tmp_path / "model", id2label={0: "circle", 1: "square", 2: "triangle"})
    exact = dfine.val(model_dir, data, workers=0, output=tmp_path / "exact")
    fast = dfine.val(model_dir, data, workers=0, output=tmp_path / "fast", dtype="float32")
    assert fast.segm is not None and fast.segm.AP == pytest.approx(exact.segm.AP, abs=1e-6)
    records = {name: json.loads((tmp_path / name / "predictions.json").read_text()) for name in ("exact", "fast")}
    assert len(records["fast"]) == len(records["exact"]) == 3 * 100
    for image_id in {r["image_id"] for r in records["exact"]}:
        best = {name: max((r for r in rs if r["image_id"] == image_id), key=lambda r: r["score"])
                for name, rs in records.items()}
        assert best["fast"]["score"] == pytest.approx(best["exact"]["score"], abs=1e-4)
        masks = [coco_mask.decode(best[name]["segmentation"]).astype(bool) for name in ("exact", "fast")]
        assert masks[0].any() and (masks[0] != masks[1]).mean() < 0.001

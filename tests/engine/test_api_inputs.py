"""Arguments of ``dfine.train`` / ``dfine.val`` from Python: wrong types are one line naming the argument, before
the data check; a model object can be fine-tuned (and its run resumed); messages name the Python argument; the
evaluation result reads like ``TrainResult.metrics``."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
from trainhelpers import TINY

import dfine
import dfine.hub.backbone
from dfine.config.presets import preset_config
from dfine.engine import build
from dfine.engine.build import build_training_model
from dfine.engine.evaluator import STAT_NAMES, ClassAP, EvalResult
from dfine.errors import ConfigError, DFineError

SHAPES = ["circle", "square", "triangle"]  # the classes of trainhelpers.tiny_data


def _tiny_model(seed: int = 0) -> dfine.DFineForObjectDetection:
    torch.manual_seed(seed)
    config = preset_config("dfine-n-coco", num_queries=100, id2label=dict(enumerate(SHAPES)))
    return dfine.DFineForObjectDetection(config)


# ------------------------------------------------------------------------------------------ argument types
def _error_class(message: str) -> type[DFineError]:
    # a device string of the right type is checked by resolve_device, whose errors are DFineErrors
    return DFineError if message.startswith("unknown device") else ConfigError


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr": "1e-3"}, "lr must be a positive number or None, got '1e-3'"),
    ({"lr": 0}, "lr must be a positive number or None, got 0"),
    ({"lr": True}, "lr must be a positive number or None, got True"),
    ({"epochs": "3"}, "epochs must be an integer >= 1 or None, got '3'"),
    ({"epochs": True}, "epochs must be an integer >= 1 or None, got True"),
    ({"epochs": 0}, "epochs must be an integer >= 1 or None, got 0"),
    ({"batch_size": "2"}, "batch_size must be an integer >= 1 or None, got '2'"),
    ({"batch_size": 2.0}, "batch_size must be an integer >= 1 or None, got 2.0"),
    ({"image_size": "320"}, "image_size must be a positive multiple of 32, got '320'"),
    ({"image_size": None}, "image_size must be a positive multiple of 32, got None"),
    ({"image_size": 100}, "image_size must be a positive multiple of 32, got 100"),
    ({"device": 0}, "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got 0"),
    ({"device": "gpu"}, "unknown device 'gpu': use auto, cpu, cuda or cuda:N"),
    ({"amp": "yes"}, "amp must be True, False or None, got 'yes'"),
    ({"pretrained_backbone": 0}, "pretrained_backbone must be True or False, got 0"),
    ({"progress": "no"}, "progress must be True or False, got 'no'"),
    ({"sync_bn": 1}, "sync_bn must be True or False, got 1"),
    ({"eval_interval": -1}, "eval_interval must be an integer >= 0 or None, got -1"),
    ({"eval_interval": False}, "eval_interval must be an integer >= 0 or None, got False"),
    ({"output": 3}, "output must be a folder (a str or Path), got 3"),
    ({"resume": 1}, "resume must be True, False or a checkpoint path (a str or Path), got 1"),
    ({"model": 5}, "model must be a preset name, hub id, folder or file or a DFineForObjectDetection (a str or "
                   "Path), got 5"),
])  # fmt: skip
def test_train_argument_types_fail_before_the_data_check(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    # the data set does not exist: had the data been read first, that is what would be reported
    with pytest.raises(_error_class(message), match=f"^{re.escape(message)}$"):
        dfine.train(tmp_path / "no-data", **{**TINY, "output": tmp_path / "run", **kwargs})


def test_train_data_must_be_a_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data must be a data YAML or data set folder \(a str or Path\), got None$"):
        dfine.train(None, **{**TINY, "output": tmp_path / "run"})


def test_train_refuses_a_model_it_cannot_copy_before_the_data_check(tmp_path: Path) -> None:
    deployed = _tiny_model().deploy()  # folded batch norms: not the parameters of a trainable model
    with pytest.raises(ConfigError, match=r"got a DeployedDFine: pass the DFineForObjectDetection it was made from, or "
                                          r"its folder \(model.save_pretrained\(folder\)\)$") as info:
        dfine.train(tmp_path / "no-data", **{**TINY, "model": deployed, "output": tmp_path / "run"})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": "2"}, "batch_size must be an integer >= 1, got '2'"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),
    ({"data": None}, "data must be a data YAML or data set folder (a str or Path), got None"),
    ({"model": None}, "model must be a preset name, hub id, folder or file or a model (a str or Path), got None"),
    ({"split": 1}, "split must be a split name such as 'val', got 1"),
    ({"image_size": "320"}, "image_size must be a positive multiple of 32, got '320'"),
    ({"image_size": True}, "image_size must be a positive multiple of 32, got True"),
    ({"device": None}, "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got None"),
    ({"device": "gpu"}, "unknown device 'gpu': use auto, cpu, cuda or cuda:N"),
    ({"progress": 1}, "progress must be True or False, got 1"),
    ({"dtype": "float8"}, "unsupported dtype 'float8': use float32, float16 or bfloat16"),
    ({"half_head": "yes"}, "half_head must be True or False, got 'yes'"),
    ({"half_head": True}, "half_head (--half-head) runs the head in the body's half precision: it needs dtype "
                          "float16 or bfloat16 (--half or --bf16)"),
    ({"half_head": True, "dtype": "float32"}, "half_head (--half-head) runs the head in the body's half precision: "
                                              "it needs dtype float16 or bfloat16 (--half or --bf16)"),
])  # fmt: skip
def test_val_argument_types_fail_before_the_data_check(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    arguments = {"model": tmp_path / "no-model", "data": tmp_path / "no-data", **kwargs}
    with pytest.raises(_error_class(message), match=f"^{re.escape(message)}$"):
        dfine.val(**arguments)


# --------------------------------------------------------------------------------------- a model object
def test_a_model_object_is_fine_tuned_from_its_weights() -> None:
    source = _tiny_model(seed=1)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    model, report = build_training_model(source, SHAPES, config_overrides={"num_queries": 100})
    assert report.fine_tune and report.source == "the DFineForObjectDetection passed as model"
    assert report.reinitialised == []  # the same classes: every tensor comes from the object
    trained = model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in before.items() if k in trained)
    assert model is not source and model.config is not source.config
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert all(torch.equal(source.state_dict()[k], v) for k, v in before.items())  # the object is not changed


def test_a_model_object_with_other_classes_gets_new_heads() -> None:
    model, report = build_training_model(_tiny_model(), ["cat", "dog"], config_overrides={"num_queries": 100})
    assert model.config.class_names == ["cat", "dog"] and report.reinitialised
    assert "fine-tuning the DFineForObjectDetection passed as model" in report.summary()


def test_train_from_a_model_object_and_resume(tmp_path: Path, tiny_yaml: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    source = _tiny_model(seed=2)
    output = tmp_path / "run"
    options = {**TINY, "model": source, "batch_size": 4, "output": output, "eval_interval": 0}
    first = dfine.train(tiny_yaml, epochs=1, **options)
    assert "fine-tuning the DFineForObjectDetection passed as model" in capsys.readouterr().out
    assert first.last_checkpoint.is_file() and (first.best_model / "config.json").is_file()
    resumed = dfine.train(tiny_yaml, epochs=2, resume=True, **options)
    assert "resuming" in capsys.readouterr().out
    assert [record["epoch"] for record in resumed.history][-1] == 1  # epochs count from 0: the second one ran


# ------------------------------------------------------------------------------------ backbone messages
def test_backbone_download_error_names_the_python_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    # the real loader, offline and with nothing cached: its message must suit dfine.train as well as dfine train
    def not_cached(*args: Any, **kwargs: Any) -> None:
        raise FileNotFoundError("not in the cache")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_cached)
    with pytest.raises(DFineError) as info:
        build_training_model("dfine-n-coco", SHAPES)
    message = str(info.value)
    assert "Pass pretrained_backbone=False (--no-pretrained-backbone) to start from random weights" in message
    assert message.count("no-pretrained-backbone") == 1 and "\n" not in message


def test_backbone_message_naming_both_is_kept() -> None:
    error = ConfigError("no ImageNet weights for it; pass pretrained_backbone=False / --no-pretrained-backbone")
    assert build._with_backbone_way_out(error) is error


def test_backbone_message_naming_neither_gets_both() -> None:
    clearer = build._with_backbone_way_out(ConfigError("unknown HGNetv2 variant 'B9'"))
    assert isinstance(clearer, ConfigError)
    assert str(clearer) == ("unknown HGNetv2 variant 'B9'; pass pretrained_backbone=False (--no-pretrained-backbone) "
                            "to train from a random backbone")


# ------------------------------------------------------------------------------------- evaluation result
def _result() -> EvalResult:
    stats = {name: 0.1 * i for i, name in enumerate(STAT_NAMES)}
    stats["APs"] = math.nan  # no small objects
    return EvalResult(**stats, per_class=[ClassAP(0, "circle", 0.5, 0.75, 3)], num_images=4, num_detections=12)


def test_eval_result_reads_like_the_train_metrics() -> None:
    result = _result()
    assert result["AP"] == result.AP == 0.0 and result["AR75"] == result.AR75
    assert result["APs"] is None  # as in as_dict() and TrainResult.metrics (NaN is not JSON)
    assert result["num_images"] == 4 and result["per_class_AP"] == {"circle": 0.5}
    assert list(result.keys()) == list(result.as_dict()) and dict(result) == result.as_dict()
    assert "AP50" in result and "mAP" not in result
    assert result.get("mAP") is None and result.get("AP50") == result.AP50


def test_unknown_metric_lists_the_names() -> None:
    with pytest.raises(KeyError, match="no metric 'mAP'; the names are: AP, AP50, AP75, .*, per_class_AP"):
        _result()["mAP"]


def test_val_result_is_indexed_by_metric_name(tiny_yaml: Path) -> None:
    result = dfine.val(_tiny_model(), tiny_yaml, image_size=160, workers=0, device="cpu")
    assert result["AP"] == result.as_dict()["AP"] and "AR100" in result

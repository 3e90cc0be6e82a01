"""Fine-tuning a saved model on a data set with other classes: exactly the class-sized tensors are new."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from trainhelpers import TINY

import dfine
from dfine.config.presets import COCO_CLASSES, preset_config
from dfine.engine.build import build_training_model
from dfine.model import DFineForObjectDetection
from dfine.model.layers import FrozenBatchNorm2d

SHAPES = ["circle", "square", "triangle"]
CLASS_SIZED = re.compile(r"^model\.(enc_score_head|decoder\.class_embed\.\d+|denoising_class_embed)\.(weight|bias)$")


@pytest.fixture(scope="module")
def coco_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 80-class D-FINE-N saved like a hub checkpoint (frozen backbone BN in its config)."""
    torch.manual_seed(0)
    model = DFineForObjectDetection(preset_config("dfine-n-coco"))
    assert model.config.num_labels == 80 and model.config.freeze_backbone_batch_norms
    return model.save_pretrained(tmp_path_factory.mktemp("coco80") / "model")


def test_new_classes_reinitialise_exactly_the_class_heads(coco_model: Path) -> None:
    saved = DFineForObjectDetection.from_pretrained(coco_model).state_dict()
    model, report = build_training_model(str(coco_model), SHAPES)
    expected = sorted(k for k in model.state_dict() if CLASS_SIZED.match(k))
    assert report.fine_tune and report.size == "n"
    assert report.reinitialised == expected
    assert "model.denoising_class_embed.weight" in expected and "model.enc_score_head.bias" in expected
    assert len([k for k in expected if ".class_embed." in k]) == 2 * model.config.decoder_layers
    assert f"re-initialised for the data set's classes ({len(expected)} tensors)" in report.summary()
    assert len(expected) == 9  # N: enc_score_head (2), 3 decoder class heads (6), denoising embedding (1)
    state = model.state_dict()
    for name, value in state.items():
        if name in expected:
            assert value.shape[0] in (3, 4), name  # 3 classes (+1 padding row for the denoising embedding)
        elif not name.endswith("num_batches_tracked"):
            assert torch.equal(value, saved[name]), name  # everything else comes from the checkpoint
    assert model.config.class_names == SHAPES and model.training
    # N trains its backbone batch norms even though the checkpoint's config froze them
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert model.config.freeze_backbone_batch_norms is False


def test_same_classes_reinitialise_nothing(tmp_path: Path, coco_model: Path) -> None:
    model, report = build_training_model(str(coco_model), list(COCO_CLASSES))
    assert report.reinitialised == []
    saved = DFineForObjectDetection.from_pretrained(coco_model).state_dict()
    for name, value in model.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(value, saved[name]), name


def test_shared_class_names_carry_their_rows(coco_model: Path) -> None:
    """A data set with some COCO classes, in its own order and spelling, starts those rows from the checkpoint's."""
    saved = DFineForObjectDetection.from_pretrained(coco_model).state_dict()
    names = ["dog", "forklift", "Person"]
    model, report = build_training_model(str(coco_model), names)
    dog, person = COCO_CLASSES.index("dog"), COCO_CLASSES.index("person")
    assert report.reinitialised == []
    assert "2 of 3 classes start from the checkpoint's class rows of the same name; 1 start fresh: forklift" in (
        report.summary())
    state = model.state_dict()
    heads = sorted(k for k in state if CLASS_SIZED.match(k))
    assert len(heads) == 9
    for key in heads:
        new, old = state[key], saved[key]
        assert new.shape[0] == (4 if "denoising" in key else 3), key
        assert torch.equal(new[0], old[dog]) and torch.equal(new[2], old[person]), key
        if "denoising" in key:
            assert torch.equal(new[3], old[80]), key  # the padding row
        if key.endswith("weight"):  # the new class's row is the fresh model's, none of the checkpoint's
            assert not any(torch.equal(new[1], row) for row in old), key
    assert model.config.class_names == names


def test_reordered_classes_keep_every_row(coco_model: Path) -> None:
    saved = DFineForObjectDetection.from_pretrained(coco_model).state_dict()
    names = list(reversed(COCO_CLASSES))
    model, report = build_training_model(str(coco_model), names)
    assert report.reinitialised == [] and "80 of 80 classes start from" in report.summary()
    assert "start fresh" not in report.summary()
    for key, value in model.state_dict().items():
        if CLASS_SIZED.match(key):
            rows = saved[key][:80].flip(0)
            expected = torch.cat([rows, saved[key][80:]]) if "denoising" in key else rows
            assert torch.equal(value, expected), key
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(value, saved[key]), key


def test_renamed_classes_of_the_same_count_keep_the_rows_in_order(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = DFineForObjectDetection(preset_config("dfine-n-coco", id2label={0: "0", 1: "1", 2: "2"}))
    model, report = build_training_model(source, SHAPES)
    assert report.reinitialised == [] and "rows are kept in label order" in report.summary()
    saved = source.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items() if CLASS_SIZED.match(k))


@pytest.mark.slow
def test_fine_tune_run(tmp_path: Path, coco_model: Path, tiny_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = {**TINY, "model": str(coco_model)}
    result = dfine.train(tiny_yaml, epochs=1, batch_size=4, output=tmp_path / "ft", **args)
    out = capsys.readouterr().out
    assert f"fine-tuning {coco_model}" in out and "re-initialised for the data set's classes" in out
    assert "linear warm-up over 0 iterations" in out and "warm-up 0 iterations" in out
    data = torch.load(result.last_checkpoint, weights_only=True)
    assert data["hparams"]["fine_tune"] is True and data["config"]["id2label"] == {"0": "circle", "1": "square",
                                                                                  "2": "triangle"}
    best = DFineForObjectDetection.from_pretrained(result.best_model)  # loads in eval with trainable-BN weights
    assert best.config.class_names == SHAPES and not best.training


def test_fine_tune_from_a_transformers_base_model_folder(tmp_path: Path, coco_model: Path) -> None:
    """transformers' DFineModel files lack the decoder class/box heads: those start fresh, the rest is the file's."""
    transformers = pytest.importorskip("transformers")
    transformers.DFineModel.from_pretrained(coco_model).save_pretrained(tmp_path / "theirs")
    source = DFineForObjectDetection.from_pretrained(coco_model).state_dict()
    model, report = build_training_model(str(tmp_path / "theirs"), SHAPES)
    heads = re.compile(r"^model\.decoder\.(class_embed|bbox_embed)\.")
    assert report.fine_tune
    assert {k for k in report.reinitialised if heads.match(k)} == {k for k in source if heads.match(k)}
    for name, value in model.state_dict().items():
        if not heads.match(name) and not CLASS_SIZED.match(name) and not name.endswith("num_batches_tracked"):
            assert torch.equal(value, source[name]), name

"""push_to_hub and save_pretrained(push_to_hub=True), against a stand-in for huggingface_hub.HfApi (tests never
reach the network): what is uploaded loads back, an existing model card is kept, failures are one line."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch

import dfine
from dfine.errors import ConfigError, DFineError, UnsupportedFeatureError


class StandInHub:
    """Records what HfApi would have been asked to do; ``uploads`` keeps a copy of each uploaded folder."""

    def __init__(self, tmp_path: Path, has_readme: bool = False, error: Exception | None = None) -> None:
        self.tmp_path, self.has_readme, self.error = tmp_path, has_readme, error
        self.created: list[tuple[str, bool | None]] = []
        self.uploads: list[Path] = []
        self.commits: list[dict] = []
        self.branches = {"main"}

    def __call__(self, token=None):  # HfApi(token=...)
        self.token = token
        return self

    def create_repo(self, repo_id, *, private=None, exist_ok=False):
        if self.error is not None:
            raise self.error
        assert exist_ok  # an existing repository gets a new commit, not an error
        self.created.append((repo_id, private))
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"me/{repo_id}")

    def create_branch(self, repo_id, *, branch, exist_ok=False):
        assert exist_ok or branch not in self.branches
        self.branches.add(branch)

    def file_exists(self, repo_id, filename, *, revision=None):
        return self.has_readme

    def upload_folder(self, *, repo_id, folder_path, revision=None, create_pr=None, commit_message=None):
        if revision not in self.branches | {None}:  # as the hub answers a commit to a branch that does not exist
            raise huggingface_hub.errors.RevisionNotFoundError(f"Revision Not Found: {revision}", response=None)
        copy = self.tmp_path / f"upload{len(self.uploads)}"
        shutil.copytree(folder_path, copy)
        self.uploads.append(copy)
        self.commits.append({"repo_id": repo_id, "revision": revision, "create_pr": create_pr,
                             "message": commit_message})
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")


@pytest.fixture
def hub(tmp_path, monkeypatch) -> StandInHub:
    stand_in = StandInHub(tmp_path)
    monkeypatch.setattr(huggingface_hub, "HfApi", stand_in)
    return stand_in


@pytest.fixture(scope="module")
def model() -> dfine.DFineForObjectDetection:
    torch.manual_seed(0)
    return dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset("dfine-n-coco", num_labels=3,
                                                                       id2label={0: "cat", 1: "dog", 2: "bird"}))


def test_the_uploaded_files_load_back_with_a_model_card(hub, model) -> None:
    url = model.push_to_hub("me/pets", private=True, token="secret")
    assert url == "https://huggingface.co/me/pets/commit/abc"
    assert hub.created == [("me/pets", True)] and hub.token == "secret"
    folder = hub.uploads[0]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: object-detection" in card and "**3 classes:** cat, dog, bird" in card
    assert "D-FINE-N object detector" in card and 'from_pretrained("me/pets")' in card
    loaded = dfine.DFineForObjectDetection.from_pretrained(folder)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(),
                                                 strict=True))


def test_an_existing_model_card_is_kept_and_a_bare_name_gains_its_owner(hub, model) -> None:
    hub.has_readme = True
    model.push_to_hub("pets", commit_message="epoch 12", revision="dev", create_pr=True)
    assert not (hub.uploads[0] / "README.md").exists()
    assert hub.commits == [{"repo_id": "me/pets", "revision": "dev", "create_pr": True, "message": "epoch 12"}]


def test_class_names_in_the_card_are_shown_as_they_are(hub) -> None:
    """The repository id was put in by replacing 'REPO' everywhere: a class REPORTER became me/pressRTER."""
    config = dfine.DFineConfig.from_preset("dfine-n-coco", num_labels=2, id2label={0: "REPORTER", 1: "dog"})
    dfine.DFineForObjectDetection(config).push_to_hub("press")
    card = (hub.uploads[0] / "README.md").read_text()
    assert "**2 classes:** REPORTER, dog" in card and 'from_pretrained("me/press")' in card


def test_a_new_branch_is_created_before_the_commit(hub, model) -> None:
    model.push_to_hub("me/pets", revision="v2")  # the hub refuses a commit to a branch that does not exist
    assert "v2" in hub.branches and hub.commits[0]["revision"] == "v2"


def test_save_pretrained_with_push_to_hub(hub, model, tmp_path) -> None:
    model.save_pretrained(tmp_path / "pets-v2", push_to_hub=True)  # the folder's name is the repository's
    assert (tmp_path / "pets-v2" / "model.safetensors").is_file() and hub.commits[0]["repo_id"] == "me/pets-v2"
    model.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="me/other", private=False)
    assert hub.created[-1] == ("me/other", False)
    processor = dfine.DFineImageProcessor(size={"height": 320, "width": 320})
    processor.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="me/other")
    assert [p.name for p in hub.uploads[-1].iterdir()] == ["preprocessor_config.json"]  # no card for a processor
    assert dfine.DFineImageProcessor.from_pretrained(hub.uploads[-1]).size == {"height": 320, "width": 320}


def test_save_pretrained_keywords_of_transformers(hub, model, tmp_path) -> None:
    model.save_pretrained(tmp_path / "rank1", is_main_process=False)
    assert not (tmp_path / "rank1").exists() and not hub.uploads  # the other ranks write nothing
    with pytest.raises(UnsupportedFeatureError, match="safetensors only"):
        model.save_pretrained(tmp_path / "x", safe_serialization=False)
    with pytest.raises(TypeError, match="unexpected keyword.*token.*hub options go with push_to_hub=True"):
        model.save_pretrained(tmp_path / "x", token="secret")


def test_failures_are_one_line(hub, model) -> None:
    hub.error = ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")
    with pytest.raises(DFineError) as caught:
        model.push_to_hub("me/pets")
    assert str(caught.value) == ("me/pets: could not push to the Hugging Face hub (Failed to resolve "
                                 "'huggingface.co')")
    with pytest.raises(ConfigError, match="repo_id must be a hub repository name"):
        model.push_to_hub("me/pets/v2")


def test_dfine_push_uploads_model_processor_and_card_in_one_commit(hub, model, tmp_path, capsys) -> None:
    from dfine.cli.main import main

    run = tmp_path / "best"
    model.save_pretrained(run)
    dfine.DFineImageProcessor(size={"height": 480, "width": 480}).save_pretrained(run)
    assert main(["push", str(run), "me/pets", "--private", "--message", "first"]) == 0
    assert "pushed" in capsys.readouterr().out and len(hub.uploads) == 1
    assert sorted(p.name for p in hub.uploads[0].iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                                "preprocessor_config.json"]
    assert dfine.DFineImageProcessor.from_pretrained(hub.uploads[0]).size == {"height": 480, "width": 480}
    assert hub.created == [("me/pets", True)] and hub.commits[0]["message"] == "first"
    # a preset is random weights: refused before anything is uploaded
    assert main(["push", "dfine-n-coco", "me/pets"]) == 2
    assert "dfine-n-coco is a preset: it has random weights" in capsys.readouterr().err
    hub.error = OSError("Network is unreachable")
    assert main(["push", str(run), "me/pets"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("me/pets: could not push to the Hugging Face hub (Network is unreachable)")
    assert len(err.splitlines()) == 1 and len(hub.uploads) == 1


def test_dfine_push_keeps_a_segmentation_models_mask_branch(hub, tmp_path, capsys, caplog) -> None:
    """The mask branch is uploaded (it was dropped: the model loaded as a detector, with a warning), and the card
    says how to load the model with its masks."""
    from seghelpers import save_tiny_segmentation_model

    from dfine.cli.main import main

    model_dir = save_tiny_segmentation_model(tmp_path / "seg", image_size=160)
    assert main(["push", str(model_dir), "me/shapes"]) == 0
    folder = hub.uploads[0]
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: image-segmentation" in card and "instance segmentation model (D-FINE-seg)" in card
    assert 'DFineForInstanceSegmentation.from_pretrained("me/shapes")' in card
    original, pushed = (dfine.DFineForInstanceSegmentation.from_pretrained(p) for p in (model_dir, folder))
    assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), pushed.state_dict().values(),
                                                 strict=True))
    assert any(k.startswith("model.mask_decoder") for k in pushed.state_dict())
    assert "loaded as DFineForObjectDetection" not in caplog.text

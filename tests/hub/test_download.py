"""The one hub downloader: old repository spellings, and each failure of huggingface_hub said in one line."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import errors as hub_errors

from dfine.errors import CheckpointError
from dfine.hub.download import download_from_hub
from dfine.processing.processor import DFineImageProcessor


def _http(kind: type[Exception]) -> Exception:
    return kind("server said no", response=SimpleNamespace(headers={}, request=None))


FAILURES = [
    (hub_errors.LocalEntryNotFoundError("not cached"),
     ("someone/model: not a local folder, config.json is not in the hub cache and the hub cannot be reached "
      "(offline?); download it once while online or pass a local folder")),
    (_http(hub_errors.GatedRepoError), "someone/model: gated repository; accept its terms and log in (hf auth login)"),
    (_http(hub_errors.RepositoryNotFoundError),
     "someone/model: not a local folder, and no such repository on the hub (or it is private: log in)"),
    (_http(hub_errors.RevisionNotFoundError), "someone/model: no such revision"),
    (_http(hub_errors.RemoteEntryNotFoundError), "someone/model: repository has no config.json"),
    (hub_errors.HFValidationError("bad id"), "someone/model: neither a local path nor a valid hub repository id"),
    (ConnectionError("connection reset\nmore detail"), "someone/model: cannot download config.json (connection reset)"),
]  # fmt: skip


@pytest.mark.parametrize(("error", "message"), FAILURES)
def test_each_failure_is_one_precise_line(error: Exception, message: str, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fail)
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        download_from_hub("someone/model", "config.json")


def test_revision_is_named(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise _http(hub_errors.RevisionNotFoundError)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fail)
    with pytest.raises(CheckpointError, match=r"^someone/model@v9: no such revision$"):
        download_from_hub("someone/model", "config.json", revision="v9")


def test_old_spelling_tries_the_current_name_and_says_which_failed(tmp_path: Path, monkeypatch) -> None:
    asked = []

    def download(repo_id, filename, revision=None, **kwargs):
        asked.append(repo_id)
        if repo_id == "ustc-community/dfine_s_coco":  # the old spelling has no repository any more
            raise _http(hub_errors.RepositoryNotFoundError)
        raise _http(hub_errors.RemoteEntryNotFoundError)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    expected = "ustc-community/dfine_s_coco (now ustc-community/dfine-small-coco): repository has no config.json"
    with pytest.raises(CheckpointError, match=f"^{re.escape(expected)}$"):
        download_from_hub("ustc-community/dfine_s_coco", "config.json")
    assert asked == ["ustc-community/dfine_s_coco", "ustc-community/dfine-small-coco"]


def test_the_processor_downloads_through_it(tmp_path: Path, monkeypatch) -> None:
    """Old repository names and the one-line messages reach DFineImageProcessor.from_pretrained too."""
    DFineImageProcessor(size=(320, 320)).save_pretrained(tmp_path)
    calls = []

    def download(repo_id, filename, revision=None, **kwargs):
        calls.append((repo_id, filename, revision, kwargs))
        if repo_id != "ustc-community/dfine-nano-coco":
            raise _http(hub_errors.RepositoryNotFoundError)
        return str(tmp_path / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    processor = DFineImageProcessor.from_pretrained("ustc-community/dfine_n_coco", revision="main", token="t")
    assert processor.size == {"height": 320, "width": 320}
    assert calls[-1] == ("ustc-community/dfine-nano-coco", "preprocessor_config.json", "main",
                         {"cache_dir": None, "local_files_only": False, "token": "t"})
    with pytest.raises(CheckpointError, match=r"^someone/else: not a local folder, and no such repository"):
        DFineImageProcessor.from_pretrained("someone/else")

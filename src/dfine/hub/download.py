"""Fetching files of Hugging Face hub repositories (``huggingface_hub``): the one downloader of model configs,
weights and processor configs, with the older repository spellings (``ustc-community/dfine_x_coco``) mapped to
today's names and every failure turned into one line that says what went wrong (offline and not cached, gated,
no such repository, revision or file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dfine.errors import CheckpointError, first_line

# Keyword arguments of from_pretrained that go to huggingface_hub.hf_hub_download (as in transformers).
HUB_OPTIONS = ("revision", "cache_dir", "token", "local_files_only", "force_download")


# Older hub spellings (``ustc-community/dfine_x_coco``) map to the current repository names.
_OLD_HUB_NAME = re.compile(r"^(?P<org>[\w.-]+)/dfine_(?P<size>[nsmlx])_(?P<data>coco|obj365|obj2coco(?:_e25)?)$")


_SIZE_WORDS = {"n": "nano", "s": "small", "m": "medium", "l": "large", "x": "xlarge"}


def _hub_candidates(repo_id: str) -> list[str]:
    candidates = [repo_id]
    match = _OLD_HUB_NAME.match(repo_id)
    if match:
        data = match["data"].replace("_", "-")
        candidates.append(f"{match['org']}/dfine-{_SIZE_WORDS[match['size']]}-{data}")
    return candidates


def _failure(repo_id: str, candidate: str, filename: str, revision: str | None, error: Exception) -> str:
    """One line saying why ``hf_hub_download`` of ``filename`` failed, naming the repository as the user gave it."""
    from huggingface_hub import errors as hub_errors

    where = repo_id if candidate == repo_id else f"{repo_id} (now {candidate})"
    where += f"@{revision}" if revision else ""
    # subclasses before their bases: a gated repository is a RepositoryNotFoundError, a file missing from the
    # cache an EntryNotFoundError
    if isinstance(error, hub_errors.LocalEntryNotFoundError):
        return (f"{where}: not a local folder, {filename} is not in the hub cache and the hub cannot be reached "
                "(offline?); download it once while online or pass a local folder")
    if isinstance(error, hub_errors.GatedRepoError):
        return f"{where}: gated repository; accept its terms and log in (hf auth login)"
    if isinstance(error, hub_errors.RepositoryNotFoundError):
        return f"{where}: not a local folder, and no such repository on the hub (or it is private: log in)"
    if isinstance(error, hub_errors.RevisionNotFoundError):
        return f"{where}: no such revision"
    if isinstance(error, hub_errors.EntryNotFoundError):
        return f"{where}: repository has no {filename}"
    if isinstance(error, hub_errors.HFValidationError):
        return f"{repo_id}: neither a local path nor a valid hub repository id"
    return f"{where}: cannot download {filename} ({first_line(error)})"


def download_from_hub(repo_id: str, filename: str, revision: str | None = None, **hub_options: Any) -> Path:
    """Fetch one file of a hub repository (cached by huggingface_hub).

    ``hub_options``: cache_dir, token, local_files_only, force_download, passed to ``hf_hub_download``. An old
    spelling of a repository name is tried as given, then under its current name.

    Raises:
        CheckpointError: the file cannot be had, with one line saying why (for an old spelling, the reason the
            current name failed unless only the old one got as far as the repository).
    """
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download

    failures: list[tuple[str, Exception]] = []
    for candidate in _hub_candidates(repo_id):
        try:
            return Path(hf_hub_download(candidate, filename, revision=revision, **hub_options))
        except Exception as error:  # noqa: BLE001 (offline, missing repository or file, auth, a transport error)
            failures.append((candidate, error))
    # a name with no repository behind it says less than one that was found but failed further on
    found = [f for f in failures if not isinstance(f[1], hub_errors.RepositoryNotFoundError)
             or isinstance(f[1], hub_errors.GatedRepoError)]
    candidate, error = (found or failures)[-1]
    raise CheckpointError(_failure(repo_id, candidate, filename, revision, error)) from error

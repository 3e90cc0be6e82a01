"""Fetching files of Hugging Face hub repositories (``huggingface_hub``), with the older repository spellings
(``ustc-community/dfine_x_coco``) mapped to today's names and every failure turned into one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dfine.errors import CheckpointError

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


def download_from_hub(repo_id: str, filename: str, revision: str | None = None, **hub_options: Any) -> Path:
    """Fetch one file of a hub repository (cached by huggingface_hub); a CheckpointError when that fails.

    ``hub_options``: cache_dir, token, local_files_only, force_download, passed to ``hf_hub_download``.
    """
    from huggingface_hub import hf_hub_download

    errors = []
    for candidate in _hub_candidates(repo_id):
        try:
            return Path(hf_hub_download(candidate, filename, revision=revision, **hub_options))
        except Exception as e:  # offline, missing repo or file, auth: all reported the same way
            errors.append(f"{candidate}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}")
    raise CheckpointError(f"could not fetch {filename} of {repo_id!r} from the Hugging Face hub "
                          f"(offline, or no such repository?) — {errors[-1]}")

"""``push_to_hub``: a saved model or processor uploaded to a Hugging Face hub repository, as transformers does it.

The files are those of ``save_pretrained`` (``config.json`` + ``model.safetensors``, ``preprocessor_config.json``),
so transformers' ``DFineForObjectDetection`` loads the repository as well as ours. A model repository without a
``README.md`` gets a short model card: the architecture, the classes, and how to load it with either library. A
failed upload is one line naming the repository.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dfine.errors import ConfigError, DFineError, first_line

__all__ = ["model_card", "push_files"]

# owner/name, or a bare name (the token's own account), as the hub accepts them
_REPO_ID = re.compile(r"^(?:[\w.\-]+/)?[\w.\-]+$")


def model_card(config: Any, repo_id: str) -> str:
    """A ``README.md`` for the model repository ``repo_id``, from its config (a segmentation model's says so, and
    how to load it with its masks)."""
    names = [str(config.id2label[i]) for i in sorted(config.id2label)]
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    from dfine.config.presets import size_of

    size = size_of(config) or ""
    title = f"D-FINE{f'-{size.upper()}' if size else ''}"
    if getattr(config, "use_mask_head", False):
        cls, tag, task = "DFineForInstanceSegmentation", "image-segmentation", "instance-segmentation"
        heading = f"# {title} instance segmentation model (D-FINE-seg)"
        what = ("A [D-FINE](https://arxiv.org/abs/2410.13842) real-time detector with the mask branch of "
                "[D-FINE-seg](https://github.com/ArgoHA/D-FINE-seg) (a pixel decoder and a mask embedding per query), "
                "saved by `dfine`.")
        also = ("transformers' `DFineForObjectDetection` loads the detector in these files, without the mask "
                "branch.")
    else:
        cls, tag, task = "DFineForObjectDetection", "object-detection", "object-detection"
        heading = f"# {title} object detector"
        what = ("A [D-FINE](https://arxiv.org/abs/2410.13842) real-time detector (HGNetv2 backbone, hybrid encoder, "
                "decoder with fine-grained distribution refinement), saved by `dfine`.")
        also = "transformers' `DFineForObjectDetection` loads the same files."
    lines = ["---", "library_name: transformers", f"pipeline_tag: {tag}",
             "tags:", f"- {task}", "- d-fine", "- dfine", "---", "", heading, "", what, "",
             f"**{len(names)} classes:** {shown}", ""]
    lines += ["## Use", "", "```python", f"from dfine import {cls}, DFineImageProcessor", "",
              f'model = {cls}.from_pretrained("{repo_id}")',
              f'processor = DFineImageProcessor.from_pretrained("{repo_id}")', "```", "",
              f"or `dfine predict photos/ --model {repo_id}` on the command line. {also}", ""]
    return "\n".join(lines)


def _check_repo_id(repo_id: Any) -> str:
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ConfigError(f"repo_id must be a hub repository name such as 'me/my-detector', got {repo_id!r}")
    return repo_id


def _create_branch(api: Any, repo_id: str, branch: str, create_pr: bool) -> None:
    """Make sure ``branch`` exists: the hub refuses a commit to a branch that does not (transformers creates it too).
    A pull request may come from someone who cannot create branches, and then targets an existing one."""
    try:
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    except Exception:
        if not create_pr:
            raise


def push_files(save: Callable[[Path], Any], repo_id: str, *, card: Callable[[str], str] | None = None,
               commit_message: str | None = None, private: bool | None = None, token: str | bool | None = None,
               revision: str | None = None, create_pr: bool = False) -> str:
    """Save into a temporary folder with ``save(folder)`` and upload that folder to ``repo_id`` (created when it
    does not exist); ``card(repo_id)`` becomes its ``README.md`` unless the repository has one (called with the
    full id, which a bare name gains only from the hub). Returns the commit's URL.

    Raises:
        ConfigError: ``repo_id`` is not a repository name.
        DFineError: the hub refused or could not be reached (one line with its reason).
    """
    from huggingface_hub import HfApi

    _check_repo_id(repo_id)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="dfine-push-") as folder:
        save(Path(folder))
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            repo_id = getattr(url, "repo_id", None) or repo_id  # a bare name gains its owner
            if revision is not None and not revision.startswith("refs/pr/"):
                _create_branch(api, repo_id, revision, create_pr)
            if card is not None and not api.file_exists(repo_id, "README.md", revision=revision):
                (Path(folder) / "README.md").write_text(card(repo_id), encoding="utf-8")
            commit = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
                                       commit_message=commit_message or "Upload D-FINE model with dfine")
        except DFineError:
            raise
        except Exception as error:  # HTTP errors, no network, a bad token: the hub library's many types
            raise DFineError(f"{repo_id}: could not push to the Hugging Face hub ({first_line(error)})") from None
    return str(getattr(commit, "commit_url", commit))

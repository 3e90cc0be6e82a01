"""Weights & Biases as an experiment logger (``pip install "dfine[wandb]"``).

**Never a login prompt.** ``wandb.init`` asks for an API key on a terminal when it finds none, which would leave an
unattended training run waiting for input. The mode is therefore decided first: ``WANDB_MODE`` when set (``online``,
``offline``, ``disabled``); otherwise online when a login exists (``WANDB_API_KEY``, or the key ``wandb login``
saved), else **offline**, with a line saying how to upload the run later (``wandb sync <folder>``). An explicit
``WANDB_MODE=online`` without a login is a one-line error before training starts.

The run lives in ``<run>/wandb/`` (or under ``WANDB_DIR``) and is named after the run folder; the project is
``WANDB_PROJECT`` or ``dfine`` (``WANDB_ENTITY`` picks the team). Metrics are plotted against ``epoch``
(``define_metric``), not W&B's own step counter, so that a resumed run that repeats an epoch is not refused for going
back in steps.

**Resume.** The run id is saved in ``last.pt``; ``--resume`` continues that run (``resume="allow"``). Offline, the
resumed part is a second offline folder with the same id: ``wandb sync`` both, oldest first.
"""

from __future__ import annotations

import inspect
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dfine.engine.experiment_loggers.base import StartInfo
from dfine.errors import ConfigError

DEFAULT_PROJECT = "dfine"
_EXIT_CODES = {"finished": 0, "failed": 1, "killed": 255}


def _has_login(wandb: Any) -> bool:
    """Whether W&B has an API key without asking for one."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    if "prompt" in inspect.signature(wandb.login).parameters:  # recent releases: looks everywhere, never prompts
        return bool(wandb.login(prompt=False, verify=False))
    # older releases have no prompt-free check: the .netrc entry `wandb login` writes
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or ""
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(wandb: Any) -> str:
    """``online``, ``offline`` or what ``WANDB_MODE`` says; never a mode that would prompt for a login."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("", "online", "run") and not _has_login(wandb):
        if mode:
            raise ConfigError(f"WANDB_MODE={mode} but W&B has no API key: run `wandb login` or set WANDB_API_KEY "
                              "(or WANDB_MODE=offline to log locally and `wandb sync` later)")
        return "offline"
    return mode or "online"


class WandbLogger:
    """One W&B run (see the module's notes on the mode and on resuming)."""

    name = "wandb"
    epoch_scalars = True

    def __init__(self, info: StartInfo) -> None:
        import wandb

        self._wandb = wandb
        previous = info.previous
        mode = wandb_mode(wandb)
        options: dict[str, Any] = {
            "project": previous.get("project") or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            "name": info.run_name, "dir": os.environ.get("WANDB_DIR") or str(info.output_dir), "mode": mode,
            "job_type": "train"}
        if previous.get("entity"):
            options["entity"] = previous["entity"]
        if previous.get("id"):
            options.update(id=previous["id"], resume="allow")
        info.output_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(**options)
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        continued = " (continued)" if previous.get("id") else ""
        if mode == "offline":
            folder = Path(self.run.dir).parent
            info.say(f"W&B: offline run {self.run.id}{continued} in {folder}; upload it with: wandb sync {folder}")
        elif mode != "disabled":
            info.say(f"W&B: run {self.run.id}{continued}: {getattr(self.run, 'url', None) or self.run.project}")

    def log_params(self, params: Mapping[str, Any]) -> None:
        # allow_val_change: a resume may change a setting (patience); the run's config keeps the latest value
        self.run.config.update(dict(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({**metrics, "epoch": step})

    def log_image(self, name: str, path: Path, step: int) -> None:
        self.run.log({f"images/{name}": self._wandb.Image(str(path)), "epoch": step})

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.summary.update({**metrics, "best/epoch": step})

    def log_model(self, folder: Path) -> None:
        artifact = self._wandb.Artifact(f"dfine-{self.run.id}", type="model",
                                        description="best EMA weights (from_pretrained folder)")
        artifact.add_dir(str(folder))
        self.run.log_artifact(artifact, aliases=["best", "latest"])

    def resume_info(self) -> dict[str, Any]:
        return {"id": self.run.id, "project": self.run.project, "entity": getattr(self.run, "entity", None) or None}

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=_EXIT_CODES.get(status, 1))

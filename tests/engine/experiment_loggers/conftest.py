"""Every test here runs offline: no logger reaches a network, a login or the user's home folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from loggerhelpers import offline_environment


@pytest.fixture(autouse=True)
def _offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    offline_environment(tmp_path, monkeypatch)
    yield
    import sys

    if "wandb" in sys.modules:  # W&B reads its environment once per process: start afresh for the next test
        sys.modules["wandb"].teardown()

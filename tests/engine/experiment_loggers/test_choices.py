"""``--logger`` / ``train(logger=...)``: the accepted names, and a missing package said at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfine.cli.main import main
from dfine.engine.experiment_loggers import choices
from dfine.engine.experiment_loggers.choices import check_installed, check_logger_names, resumed_logger_names
from dfine.errors import ConfigError


@pytest.mark.parametrize(("value", "names"), [
    (None, None),
    ("wandb", ("wandb",)),
    ("WandB", ("wandb",)),  # any case
    ("wandb,mlflow", ("wandb", "mlflow")),
    (["mlflow", "wandb", "mlflow"], ("mlflow", "wandb")),
    (("tensorboard",), ("tensorboard",)),
    ("none", ()),
    ([], ()),
])  # fmt: skip
def test_logger_names(value: object, names: tuple[str, ...] | None) -> None:
    assert check_logger_names(value) == names


def test_unknown_logger_lists_the_choices() -> None:
    with pytest.raises(ConfigError,
                       match=r"^unknown logger 'comet': choose from tensorboard, wandb, mlflow \(or none\)$"):
        check_logger_names(["wandb", "comet"])
    with pytest.raises(ConfigError, match="^logger must be a name or a list of names"):
        check_logger_names(3)


def _missing(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    found = choices.importlib.util.find_spec
    monkeypatch.setattr(choices.importlib.util, "find_spec", lambda name: None if name == module else found(name))


def test_a_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _missing(monkeypatch, "wandb")
    check_installed(["mlflow"])
    with pytest.raises(ConfigError, match=r'^logging to W&B needs the wandb package: pip install "dfine\[wandb\]"$'):
        check_installed(["mlflow", "wandb"])


@pytest.mark.parametrize(("options", "message"), [
    (["--logger", "comet"], "unknown logger 'comet': choose from tensorboard, wandb, mlflow (or none)"),
    (["--logger", "wandb", "--logger", "mlflow"],
     'logging to MLflow needs the mlflow package: pip install "dfine[mlflow]" (or the full mlflow package)'),
])  # fmt: skip
def test_cli_logger_problems_come_before_the_data_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], options: list[str],
                                                        message: str) -> None:
    _missing(monkeypatch, "mlflow")
    # the data path does not exist: the logger is what is reported
    assert main(["train", "--data", str(tmp_path / "unused"), "--no-pretrained-backbone", *options]) == 2
    assert capsys.readouterr().err.strip() == f"dfine train: error: {message}"


def test_a_resume_keeps_the_run_loggers_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = {"wandb": {"id": "abc"}, "mlflow": {"run_id": "r1"}}
    assert resumed_logger_names(None, saved) == ("wandb", "mlflow")
    assert resumed_logger_names((), saved) == ()  # --logger none
    assert resumed_logger_names(("mlflow",), saved) == ("mlflow",)
    assert resumed_logger_names(None, {}) == ()
    _missing(monkeypatch, "wandb")
    with pytest.raises(ConfigError, match=r"^logging to W&B \(as the resumed run did; --logger none continues "
                                          r"without it\) needs the wandb package"):
        resumed_logger_names(None, saved)

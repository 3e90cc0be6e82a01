"""The table of export formats: complete and consistent, and the one source of the command line's format and
backend choices, the suffix detection of --model and the messages naming the known formats."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dfine.cli.main import build_parser, main
from dfine.errors import ConfigError, DFineError, InputFileError
from dfine.export.formats import (
    FORMATS,
    backend_format,
    exported_format,
    format_named,
    format_of,
    known_suffixes,
    open_exported,
)

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"

# the package each format's runtime imports: without it, preparing to run the file is the missing-extra line
RUNTIME_PACKAGE = {"onnx": "onnxruntime", "openvino": "openvino", "engine": "tensorrt"}


def _choices(command: str, option: str) -> list[str]:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in subparsers.choices[command]._actions if option in a.option_strings)
    return list(action.choices)


def test_the_table_is_consistent() -> None:
    names = [row.name for row in FORMATS]
    backends = [row.backend for row in FORMATS]
    suffixes = [suffix for row in FORMATS for suffix in row.suffixes]
    assert len(set(names)) == len(names) and len(set(backends)) == len(backends)
    assert "torch" not in backends  # --backend torch is PyTorch itself
    assert len(set(suffixes)) == len(suffixes), "a suffix must name one format"
    assert all(s.startswith(".") and s == s.lower() and len(s) > 1 for s in suffixes)
    for row in FORMATS:
        for function in (row.require_export, row.check_output, row.export, row.prepare, row.open):
            assert callable(function), (row.name, function)
        assert row.describe is None or callable(row.describe)
        assert row.suffix == row.suffixes[0] and row.kind.split()[0] in ("a", "an")
        assert row.extra is None or f'"dfine[{row.extra}]"' in row.install
        assert format_named(row.name) is row and backend_format(row.backend) is row
        assert all(format_of(f"model{s.upper()}") is row for s in row.suffixes)  # any case
    assert set(RUNTIME_PACKAGE) == set(names), "say which package each format's runtime imports"


def test_each_formats_extra_is_declared_and_tested() -> None:
    """The extra a missing-package line names exists, and the test extra installs it too (so CI tests the row)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    for row in FORMATS:
        if row.extra is not None:
            assert row.extra in extras, row.name
            assert set(extras[row.extra]) <= set(extras["test"]), row.name


def test_the_command_line_offers_exactly_the_table(capsys) -> None:
    assert _choices("export", "--format") == [row.name for row in FORMATS]
    assert _choices("benchmark", "--backend") == ["torch", *(row.backend for row in FORMATS)]
    assert _choices("predict", "--backend") == ["torch", *(row.backend for row in FORMATS if row.predicts)]
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"--format {{{','.join(row.name for row in FORMATS)}}}" in text
    assert all(f"{row.name} ({row.help})" in text for row in FORMATS)


def test_a_suffix_not_in_the_table_is_one_line_naming_the_known_ones(tmp_path) -> None:
    assert known_suffixes() == ", ".join(s for row in FORMATS for s in row.suffixes)
    (tmp_path / "m.tflite").write_text("not ours")
    for call in (exported_format, open_exported):
        with pytest.raises(InputFileError) as error:
            call(tmp_path / "m.tflite")
        message = str(error.value)
        assert message == f"{tmp_path / 'm.tflite'}: not an exported model: its suffix is none of {known_suffixes()}"
        assert "\n" not in message
    with pytest.raises(ConfigError, match=r"unknown export format 'tflite': use onnx, openvino or engine$"):
        format_named("tflite")
    for model in ("model.pth", "runs/x/best", "ustc-community/dfine-small-coco", "dfine-n-coco", "m.onnx.json"):
        assert format_of(model) is None, model


@pytest.mark.parametrize("row", FORMATS, ids=lambda row: row.name)
def test_a_missing_runtime_is_the_install_line(row, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, RUNTIME_PACKAGE[row.name], None)  # import -> ImportError
    with pytest.raises(DFineError) as error:
        row.prepare("auto")
    assert row.install in str(error.value) and "\n" not in str(error.value)


def test_export_without_its_packages_says_what_to_install_before_loading(tmp_path, monkeypatch, error_line) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("dfine.model.DFineForObjectDetection.from_pretrained", fail)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert main(["export", "--model", "dfine-n-coco", "--output", str(tmp_path / "m.onnx")]) == 2
    expected = 'exporting to ONNX needs onnxscript, which is not installed: pip install "dfine[onnx]"'
    assert error_line().endswith(expected)


def test_val_refuses_an_exported_file_it_cannot_run_at_once(tmp_path, error_line) -> None:
    """dfine val evaluates PyTorch models and the exported files dfine predict runs: another exported file is named
    as such before the (here missing) data set is read, instead of an "unknown checkpoint type" afterwards."""
    for row in FORMATS:
        if row.predicts:
            continue
        model = tmp_path / f"m{row.suffix}"
        assert main(["val", "--model", str(model), "--data", str(tmp_path / "no-data")]) == 2
        assert f"{model}: dfine val takes a PyTorch model or an exported file it can run, not {row.kind}" \
            in error_line()


def test_predict_refuses_a_format_it_does_not_run_before_any_work(tmp_path, error_line) -> None:
    for row in FORMATS:
        if row.predicts:
            continue
        output = tmp_path / "out"
        assert main(["predict", str(tmp_path), "--model", str(tmp_path / f"m{row.suffix}"), "--output",
                     str(output)]) == 2
        assert f"dfine predict does not run {row.kind}: predict with {row.built_from}" in error_line()
        assert not output.exists()


def test_benchmark_names_the_backend_of_an_exported_file(tmp_path, error_line) -> None:
    """A file runs in its own format's runtime: another --backend is refused with the right one (before reading)."""
    for row in FORMATS:
        for other in FORMATS:
            if other is row:
                continue
            assert main(["benchmark", "--model", str(tmp_path / f"m{row.suffix}"), "--backend", other.backend]) == 2
            assert f"{row.kind} runs with --backend {row.backend}, not {other.backend}" in error_line()


def test_the_table_opens_and_describes_onnx_without_torch(n_onnx) -> None:
    """The table imports nothing heavy: an .onnx opens (and is described) through it where PyTorch is missing."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any attempt to import torch now fails
        from dfine.export.formats import format_of, open_exported
        opened = open_exported({str(n_onnx)!r}, device="cpu")
        assert opened.where == "cpu" and opened.model.image_size == (320, 320), opened
        assert opened.description == "ONNX Runtime CPUExecutionProvider, fp32", opened.description
        assert any(line.startswith("precision:   fp32") for line in format_of({str(n_onnx)!r}).describe(
            __import__("pathlib").Path({str(n_onnx)!r})))
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

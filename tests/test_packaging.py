"""The package stands on its own: transformers and dfine-seg are test oracles only, and light modules do not pull in
torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "dfine"


def test_no_transformers_import_in_the_package() -> None:
    offenders = [str(p) for p in SRC.rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+transformers\b", p.read_text(), re.MULTILINE)]
    assert offenders == []


def test_no_dfine_seg_import_in_the_package() -> None:
    """D-FINE-seg (dfine_seg) is the segmentation tests' oracle only, like transformers."""
    offenders = [str(p) for p in SRC.rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+dfine_seg\b", p.read_text(), re.MULTILINE)]
    assert offenders == []


def test_model_runs_with_transformers_unavailable() -> None:
    code = ("import sys; sys.modules['transformers'] = None\n"
            "import torch, dfine\n"
            "m = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset('dfine-n-coco')).eval()\n"
            "p = dfine.DFineImageProcessor(size={'height': 256, 'width': 256})\n"
            "import numpy as np\n"
            "x = p(np.zeros((50, 70, 3), dtype=np.uint8))\n"
            "with torch.no_grad(): out = m(**x)\n"
            "r = p.post_process_object_detection(out, threshold=0.0, target_sizes=[(50, 70)])\n"
            "print(len(r[0]['scores']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "300"


def test_importing_dfine_does_not_import_torch() -> None:
    code = "import sys, dfine, dfine.errors, dfine.config; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_test_files_have_unique_names() -> None:
    """The test folders are not packages, so pytest imports each test file by its bare name: two files with one
    name in different folders stop the collection of the whole suite ("import file mismatch")."""
    tests = Path(__file__).resolve().parent
    seen: dict[str, list[str]] = {}
    for path in tests.rglob("test_*.py"):
        seen.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}

"""dfine.imaging and dfine.runtime import and work where PyTorch cannot be imported (the torch-free runtime reads
pictures through dfine.imaging, so every module of both packages must do without it)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap

import numpy as np
import torch
from PIL import Image

import dfine.imaging
import dfine.runtime
from dfine.imaging.draw import draw_batch
from dfine.imaging.inputs import image_list, is_tensor, standardize_image

# A meta-path finder refusing torch and everything built on it, installed before dfine is imported.
_BLOCK_TORCH = """
import importlib.abc, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, BlockTorch())
"""


def _modules(package) -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."))


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    script = _BLOCK_TORCH + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)


def test_every_imaging_and_runtime_module_imports_without_torch() -> None:
    modules = _modules(dfine.imaging) + _modules(dfine.runtime) + ["dfine.utils.checks"]
    assert "dfine.imaging.inputs" in modules and "dfine.imaging.draw" in modules and "dfine.runtime.onnx" in modules
    done = _run_without_torch(f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
        assert not any(m.split(".")[0] in ("torch", "torchvision") for m in sys.modules), "torch was imported"
        print("imported", len({modules!r}))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"imported {len(modules)}"


def test_inputs_and_drawing_work_without_torch(tmp_path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (6, 4), (10, 20, 30)).save(path)
    done = _run_without_torch(f"""
        import numpy as np
        from dfine.imaging.draw import draw_batch
        from dfine.imaging.inputs import image_list, is_tensor, standardize_image

        batch = np.zeros((2, 4, 6, 3), np.uint8)
        assert not is_tensor(batch) and len(image_list(batch)) == 2 and len(image_list(iter([batch[0]]))) == 1
        assert standardize_image({str(path)!r}).getpixel((0, 0)) == (10, 20, 30)
        grid = draw_batch(np.full((1, 3, 8, 8), 0.5, np.float32), [{{"boxes": np.array([[0.5, 0.5, 0.5, 0.5]]),
                                                                     "class_labels": np.array([0])}}])
        print(grid.mode)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RGB"


def test_tensors_are_recognised_without_importing_torch_in_imaging() -> None:
    """With torch loaded by the caller, a tensor is read as one (channels first, split as a batch when 4-D)."""
    tensor = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).reshape(2, 3, 4, 5)
    assert is_tensor(tensor) and not is_tensor(tensor.numpy())
    items = image_list(tensor)
    assert len(items) == 2
    picture = standardize_image(items[1])
    assert np.array_equal(np.asarray(picture), tensor[1].permute(1, 2, 0).numpy())
    half = standardize_image(torch.full((3, 2, 2), 0.5, dtype=torch.bfloat16))
    assert half.dtype == np.float32 and np.all(half == 0.5)


def test_draw_batch_takes_tensors_and_arrays_alike() -> None:
    values = torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]]), "class_labels": torch.tensor([1])},
               {"boxes": np.zeros((0, 4)), "class_labels": np.zeros(0, np.int64)}]
    from_tensor = draw_batch(values, targets, class_names=["a", "b"])
    from_array = draw_batch(values.numpy(), targets, class_names=["a", "b"])
    assert np.array_equal(np.asarray(from_tensor), np.asarray(from_array))

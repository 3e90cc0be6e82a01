"""User errors raised in DataLoader worker processes reach the main process as themselves, with their one line."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from dfine.errors import DatasetError, DFineError, InputFileError


class _Failing(Dataset):
    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> torch.Tensor:
        raise self.error


def _raised_through_a_worker(error: Exception) -> BaseException:
    loader = DataLoader(_Failing(error), batch_size=1, num_workers=1)
    with pytest.raises(Exception) as caught:
        next(iter(loader))
    return caught.value


def test_an_input_file_error_in_a_worker_keeps_its_type_and_one_line() -> None:
    error = _raised_through_a_worker(InputFileError("/data/images/b.tif", "cannot be decoded (truncated)"))
    assert type(error) is InputFileError
    assert str(error) == "/data/images/b.tif: cannot be decoded (truncated)"
    assert (error.path, error.problem) == ("/data/images/b.tif", "cannot be decoded (truncated)")


@pytest.mark.parametrize("error", [DFineError("bad input: fix it"), DatasetError("d.yaml: 2 problems", ["a", "b"])])
def test_other_user_errors_in_a_worker_keep_their_type_and_message(error: DFineError) -> None:
    raised = _raised_through_a_worker(error)
    assert type(raised) is type(error)
    assert str(raised) == str(error)
    if isinstance(error, DatasetError):
        assert raised.problems == error.problems


def test_an_error_built_from_a_plain_message_is_unchanged() -> None:
    assert str(DFineError("Caught nothing")) == "Caught nothing"
    assert str(InputFileError("a.jpg", "is missing")) == "a.jpg: is missing"

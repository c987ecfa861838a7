import pytest
import torch

from polyprompt.core import InputError, NonFiniteError, ShapeError, check_tensor


def test_accepts_valid():
    x = torch.zeros(2, 3, 4)
    assert check_tensor(x, "x", rank=3, dims={-1: 4}, min_size={0: 1}) is x


@pytest.mark.parametrize(
    ("value", "kwargs", "error", "pattern"),
    [
        ([1, 2], {}, InputError, "must be a torch.Tensor, got list"),
        (
            torch.zeros(2, 3),
            {"rank": 4},
            ShapeError,
            "must have 4 dimensions, got shape \\(2, 3\\)",
        ),
        (torch.zeros(2, 3), {"rank": (3, 4)}, ShapeError, "3 or 4 dimensions"),
        (torch.zeros(2, 3), {"dims": {1: 4}}, ShapeError, "dimension 1 must be 4"),
        (torch.zeros(0, 3), {"min_size": {0: 1}}, ShapeError, "at least 1"),
        (torch.tensor([1.0, float("nan")]), {}, NonFiniteError, "1 NaN and 0 infinite"),
        (torch.tensor([float("inf")]), {}, NonFiniteError, "0 NaN and 1 infinite"),
    ],
)
def test_rejects_with_message(value, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        check_tensor(value, "x", where="Here.fn", **kwargs)


def test_message_names_the_caller():
    with pytest.raises(ShapeError, match=r"^Here\.fn: `images`"):
        check_tensor(torch.zeros(1), "images", rank=4, where="Here.fn")

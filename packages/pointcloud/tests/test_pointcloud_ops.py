import pytest
import torch

from polyprompt.core.errors import InputError, NonFiniteError, ShapeError
from polyprompt.pointcloud.ops import (
    chamfer_l2,
    farthest_point_sample,
    group_points,
    knn_indices,
    prepare_points,
)


def _fps_reference(x, m):
    idx = [0]
    dist = ((x - x[0]) ** 2).sum(-1)
    for _ in range(m - 1):
        j = int(dist.argmax())
        idx.append(j)
        dist = torch.minimum(dist, ((x - x[j]) ** 2).sum(-1))
    return idx


def test_fps_matches_the_sequential_definition():
    x = torch.rand(3, 200, 3, generator=torch.Generator().manual_seed(1))
    idx = farthest_point_sample(x, 16)
    for b in range(3):
        assert idx[b].tolist() == _fps_reference(x[b], 16)


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    pts, q = torch.rand(2, 50, 3, generator=g), torch.rand(2, 5, 3, generator=g)
    idx = knn_indices(q, pts, 4)
    d = ((q[:, :, None] - pts[:, None]) ** 2).sum(-1)
    assert torch.equal(idx, d.argsort(-1)[..., :4])


def test_group_points_shapes_and_recentring():
    x = torch.rand(2, 128, 3)
    patches, centers = group_points(x, 16, 8)
    assert patches.shape == (2, 16, 8, 3) and centers.shape == (2, 16, 3)
    # the nearest neighbour of a centre is the centre itself: first point is at the origin
    assert torch.allclose(patches[:, :, 0], torch.zeros(2, 16, 3))


def test_chamfer_l2():
    a = torch.zeros(1, 4, 3)
    b = torch.ones(1, 4, 3)
    assert float(chamfer_l2(a, a)) == 0.0
    assert float(chamfer_l2(a, b)) == pytest.approx(6.0)


def test_layouts_normals_and_planar_lift():
    assert prepare_points(torch.rand(2, 10, 6)).shape == (2, 10, 3)
    lifted = prepare_points(torch.rand(2, 10, 2))
    assert lifted.shape == (2, 10, 3) and bool((lifted[..., 2] == 0).all())
    with pytest.raises(ShapeError, match="2-D points"):
        prepare_points(torch.rand(2, 10, 2), lift_2d=False)


@pytest.mark.parametrize(
    ("x", "err", "match"),
    [
        (torch.rand(10, 3), ShapeError, "add a batch dimension"),
        (torch.rand(2, 10, 4), ShapeError, "last dimension"),
        (torch.rand(2, 0, 3), ShapeError, "empty"),
        (torch.rand(0, 10, 3), ShapeError, "empty batch"),
        ([[0.0, 0.0, 0.0]], InputError, "torch.Tensor"),
    ],
)
def test_bad_shapes(x, err, match):
    with pytest.raises(err, match=match):
        prepare_points(x)


def test_non_finite_coordinates_are_named():
    x = torch.rand(3, 10, 3)
    x[1, 4, 0] = float("nan")
    x[2, 0, 1] = float("inf")
    with pytest.raises(NonFiniteError, match=r"1 NaN and 1 infinite.*cloud 1"):
        prepare_points(x)


def test_too_few_points_for_a_group():
    with pytest.raises(ShapeError, match="fewer than the 16"):
        group_points(torch.rand(2, 12, 3), 16, 8)


def test_duplicate_points_that_break_fps_and_knn():
    x = torch.rand(2, 64, 3)
    x[1] = x[1, :5].repeat(13, 1)[:64]  # only 5 distinct points
    with pytest.raises(InputError, match=r"cloud 1 has only 5 distinct points"):
        group_points(x, 16, 8)

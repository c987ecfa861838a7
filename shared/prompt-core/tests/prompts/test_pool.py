"""PromptPool: top-k matching, key loss, frequency buffer and penalty."""

from __future__ import annotations

import math

import pytest
import torch

from polyprompt.core.errors import ConfigError, NonFiniteError, ShapeError
from polyprompt.core.prompts.pool import PoolOutput, PromptPool


def _hand_pool(**kw) -> PromptPool:
    """4 prompts whose keys are the unit vectors e0..e3."""
    pool = PromptPool(pool_size=4, prompt_length=2, dim=4, **kw)
    with torch.no_grad():
        pool.keys.copy_(torch.eye(4))
        pool.prompts.copy_(torch.arange(4.0).view(4, 1, 1).expand(4, 2, 4))
    return pool


def test_output_shapes() -> None:
    pool = PromptPool(10, 5, 16, key_dim=12, top_k=3)
    out = pool(torch.randn(4, 12))
    assert isinstance(out, PoolOutput)
    assert out.prompts.shape == (4, 3, 5, 16)
    assert out.indices.shape == (4, 3) and out.indices.dtype == torch.long
    assert out.similarity.shape == (4, 10)
    assert out.key_loss.shape == ()


def test_prefix_layers_shape() -> None:
    pool = PromptPool(10, 20, 16, prefix_layers=3)
    assert pool.prompts.shape == (10, 3, 2, 20, 16)
    assert pool(torch.randn(2, 16)).prompts.shape == (2, 1, 3, 2, 20, 16)


def test_topk_matches_hand_example() -> None:
    pool = _hand_pool(top_k=2).eval()
    query = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.2, 3.0]])
    out = pool(query)
    assert out.indices.tolist() == [[0, 1], [3, 2]]
    # prompt i is filled with the value i
    assert out.prompts[0, 0].unique().tolist() == [0.0]
    assert out.prompts[1, 1].unique().tolist() == [2.0]
    n0 = math.sqrt(1.25)
    n1 = math.sqrt(9.04)
    expected_sim = torch.tensor([[1 / n0, 0.5 / n0, 0, 0], [0, 0, 0.2 / n1, 3 / n1]])
    assert torch.allclose(out.similarity, expected_sim, atol=1e-6)
    expected_loss = ((1 - 1 / n0) + (1 - 0.5 / n0) + (1 - 3 / n1) + (1 - 0.2 / n1)) / 4
    assert out.key_loss.item() == pytest.approx(expected_loss, abs=1e-6)


def test_key_loss_trains_keys_and_prompts_get_grad_only_when_selected() -> None:
    pool = _hand_pool(top_k=1).eval()
    out = pool(torch.tensor([[1.0, 0.2, 0.0, 0.0]]))
    (out.key_loss + out.prompts.sum()).backward()
    assert pool.keys.grad is not None and pool.keys.grad[0].abs().sum() > 0
    assert pool.keys.grad[1:].abs().sum() == 0
    assert pool.prompts.grad[0].abs().sum() > 0
    assert pool.prompts.grad[1:].abs().sum() == 0
    # a few steps on the key loss move key 0 toward the query
    opt = torch.optim.SGD(pool.parameters(), lr=0.5)
    q = torch.tensor([[1.0, 0.2, 0.0, 0.0]])
    first = pool(q).key_loss.item()
    for _ in range(20):
        opt.zero_grad()
        pool(q).key_loss.backward()
        opt.step()
    assert pool(q).key_loss.item() < first


def test_frequency_updates_only_in_train_mode() -> None:
    pool = _hand_pool(top_k=2)
    q = torch.tensor([[1.0, 0.5, 0.0, 0.0]])
    pool.eval()
    pool(q)
    assert pool.frequency.tolist() == [1.0, 1.0, 1.0, 1.0]
    pool.train()
    pool(q)
    assert pool.frequency.tolist() == [2.0, 2.0, 1.0, 1.0]
    pool.reset_frequency()
    assert pool.frequency.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert "frequency" in pool.state_dict()


def test_penalty_moves_selection_to_less_used_prompts() -> None:
    q = torch.tensor([[1.0, 0.5, 0.0, 0.0]])  # closest to key 0, then key 1
    penalised = _hand_pool(top_k=1, frequency_penalty=True).train()
    plain = _hand_pool(top_k=1, frequency_penalty=False).train()
    picks = [penalised(q).indices.item() for _ in range(10)]
    plain_picks = [plain(q).indices.item() for _ in range(10)]
    assert plain_picks == [0] * 10
    assert picks[0] == 0 and 1 in picks  # switches once prompt 0 is over-used
    assert set(picks) <= {0, 1}
    # d0 = 1 - 1/sqrt(1.25) ~ 0.106, d1 ~ 0.553: 0 wins while 0.106 * f0 <= 0.553
    assert picks.index(1) == 5
    # eval: no penalty by default, so the raw best match comes back
    penalised.eval()
    assert penalised(q).indices.item() == 0
    penalised.penalty_in_eval = True
    freq = penalised.frequency.clone()
    distance = 1 - torch.nn.functional.cosine_similarity(q, torch.eye(4), dim=-1)
    expected = int((distance * freq).argmin())
    assert expected != 0 and penalised(q).indices.item() == expected
    assert torch.equal(penalised.frequency, freq)  # eval never counts


def test_random_init_and_similarity_unscaled_by_penalty() -> None:
    torch.manual_seed(0)
    pool = PromptPool(6, 2, 8, init="random", init_std=1.0)
    assert pool.keys.std().item() == pytest.approx(1.0, rel=0.3)
    q = torch.randn(3, 8)
    with torch.no_grad():
        pool.frequency.copy_(torch.tensor([50.0, 1, 1, 1, 1, 1]))
    out = pool.train()(q)
    expected = torch.nn.functional.cosine_similarity(q[:, None], pool.keys[None], dim=-1)
    assert torch.allclose(out.similarity, expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pool_size": 0, "prompt_length": 1, "dim": 4},
        {"pool_size": 2, "prompt_length": 0, "dim": 4},
        {"pool_size": 2, "prompt_length": 1, "dim": 0},
        {"pool_size": 2, "prompt_length": 1, "dim": 4, "top_k": 3},
        {"pool_size": 2, "prompt_length": 1, "dim": 4, "top_k": 0},
        {"pool_size": 2, "prompt_length": 1, "dim": 4, "key_dim": 0},
        {"pool_size": 2, "prompt_length": 1, "dim": 4, "prefix_layers": 0},
        {"pool_size": 2, "prompt_length": 1, "dim": 4, "init": "text"},
        {"pool_size": 2, "prompt_length": 1, "dim": 4, "init": "zeros"},
    ],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PromptPool(**kwargs)


def test_bad_query_raises() -> None:
    pool = PromptPool(4, 2, 8)
    with pytest.raises(ShapeError, match="query"):
        pool(torch.randn(8))
    with pytest.raises(ShapeError, match="dimension 1 must be 8"):
        pool(torch.randn(2, 7))
    with pytest.raises(ShapeError):
        pool(torch.randn(0, 8))
    with pytest.raises(NonFiniteError):
        pool(torch.tensor([[float("nan")] * 8]))

"""polyprompt.core.freezing: freeze_backbone, module_identity, trainable_report."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from polyprompt.core.checkpoint import PROMPT_WEIGHTS_FILE, save_prompt
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import InputError
from polyprompt.core.freezing import (
    TrainableReport,
    freeze_backbone,
    module_identity,
    trainable_report,
)
from polyprompt.core.methods.base import PromptMethod


@dataclass
class TinyConfig(PromptConfig):
    num_tokens: int = 4


class TinyPrompted(PromptMethod):
    """A prompt (n, 8) added to a frozen Linear backbone's output, then a linear head."""

    config_class = TinyConfig
    method_name = "tiny_freezing_test"

    def __init__(self, backbone: nn.Module, config: TinyConfig) -> None:
        super().__init__(freeze_backbone(backbone), config)
        self.prompt = nn.Parameter(torch.zeros(config.num_tokens, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.backbone(x) + self.prompt.mean(0))


def test_freeze_backbone_turns_off_grads_and_returns_module():
    m = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 2))
    out = freeze_backbone(m)
    assert out is m
    assert not any(p.requires_grad for p in m.parameters())
    assert not m.training
    m2 = freeze_backbone(nn.Linear(2, 2), eval_mode=False)
    assert m2.training and not m2.weight.requires_grad
    with pytest.raises(InputError, match="nn.Module"):
        freeze_backbone("not a module")


def test_gradients_reach_only_trainable_params():
    torch.manual_seed(0)
    model = TinyPrompted(nn.Linear(5, 8), TinyConfig())
    model(torch.randn(2, 5)).sum().backward()
    assert model.backbone.weight.grad is None
    assert model.head.weight.grad is not None
    assert model.prompt.grad is not None


def test_module_identity_fields_and_sensitivity():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 8), nn.Linear(4, 8)
    ida, idb = module_identity(a), module_identity(b)
    assert set(ida) == {"class", "num_params", "shapes_digest", "fingerprint"}
    assert ida["class"] == "torch.nn.modules.linear.Linear"
    assert ida["num_params"] == 4 * 8 + 8
    assert len(ida["shapes_digest"]) == 16 and len(ida["fingerprint"]) == 16
    assert ida == module_identity(a)  # deterministic
    assert ida["shapes_digest"] == idb["shapes_digest"]
    assert ida["fingerprint"] != idb["fingerprint"]
    b.load_state_dict(a.state_dict())
    assert module_identity(b) == ida
    assert module_identity(nn.Linear(4, 9))["shapes_digest"] != ida["shapes_digest"]
    # the fingerprint sees buffers too
    bn = nn.BatchNorm1d(3)
    before = module_identity(bn)["fingerprint"]
    bn.running_mean += 1
    assert module_identity(bn)["fingerprint"] != before


def test_module_identity_other_dtypes_and_meta():
    m = nn.Linear(3, 3).to(torch.bfloat16)
    assert module_identity(m)["fingerprint"] is not None
    with torch.device("meta"):
        meta = nn.Linear(3, 3)
    ident = module_identity(meta)
    assert ident["fingerprint"] is None and ident["num_params"] == 12


def test_trainable_report_prompt_method(tmp_path):
    torch.manual_seed(0)
    model = TinyPrompted(nn.Linear(5, 8), TinyConfig(num_tokens=4))
    r = trainable_report(model)
    assert isinstance(r, TrainableReport)
    assert r.trainable_params == 4 * 8 + 8 * 3 + 3
    assert r.backbone_params == 5 * 8 + 8
    assert r.total_params == r.trainable_params + r.backbone_params
    assert r.percent_of_backbone == pytest.approx(100 * r.trainable_params / r.backbone_params)
    # checkpoint_bytes is the exact size of the file save_prompt writes
    save_prompt(model, tmp_path)
    assert r.checkpoint_bytes == (tmp_path / PROMPT_WEIGHTS_FILE).stat().st_size
    d = r.to_dict()
    assert d["trainable_params"] == r.trainable_params and set(d) == {
        "trainable_params",
        "total_params",
        "backbone_params",
        "percent_of_backbone",
        "checkpoint_bytes",
    }
    text = str(r)
    assert f"{r.trainable_params:,}" in text and "backbone" in text and "bytes" in text


def test_trainable_report_plain_module_counts_frozen_as_backbone():
    model = nn.Sequential(freeze_backbone(nn.Linear(10, 10)), nn.Linear(10, 2))
    r = trainable_report(model)
    assert (r.trainable_params, r.backbone_params, r.total_params) == (22, 110, 132)
    assert r.percent_of_backbone == pytest.approx(20.0)
    assert r.checkpoint_bytes > 22 * 4


def test_trainable_report_tied_params_counted_once():
    lin = nn.Linear(4, 4)
    model = nn.ModuleDict({"a": lin, "b": lin})
    r = trainable_report(model)
    assert (
        r.trainable_params == 20
        and r.backbone_params == 0
        and r.percent_of_backbone == float("inf")
    )


def test_trainable_report_rejects_non_modules():
    with pytest.raises(InputError):
        trainable_report(object())

"""PromptBank: one backbone, many prompts, mixed-task batches equal to running each task alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("timm")
from timm.models.vision_transformer import VisionTransformer

from polyprompt.core.backbones.timm_vit import TimmViTAdapter
from polyprompt.core.bank import PromptBank
from polyprompt.core.checkpoint import save_prompt
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import BackboneMismatchError, InputError, ShapeError
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.registry import create


def vit(seed: int = 0, **kw) -> TimmViTAdapter:
    torch.manual_seed(seed)
    cfg = dict(
        img_size=32, patch_size=8, in_chans=1, embed_dim=64, depth=3, num_heads=4, num_classes=0
    )
    cfg.update(kw)
    return TimmViTAdapter(VisionTransformer(**cfg))


def randomize(method: nn.Module) -> nn.Module:
    """Give prompts and head distinct non-trivial values (as if trained)."""
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.5)
    return method


def make_bank(pool: str = "token", seed: int = 0) -> PromptBank:
    bank = PromptBank(vit(seed, global_pool=pool))
    torch.manual_seed(123)
    bb = bank.backbone
    specs = {
        "shallow4": ("vpt", dict(num_classes=10, num_tokens=4)),
        "deep4": ("vpt", dict(num_classes=2, num_tokens=4, deep=True)),
        "deep4_k2": ("vpt", dict(num_classes=5, num_tokens=4, deep=True, deep_layers=2)),
        "shallow4b": ("vpt", dict(num_classes=3, num_tokens=4)),
        "deep6": ("vpt", dict(num_classes=4, num_tokens=6, deep=True)),
        "probe": ("linear_probe", dict(num_classes=3)),
        "probe2": ("linear_probe", dict(num_classes=7)),
    }
    for name, (method, cfg) in specs.items():
        bank.add(name, randomize(create(method, bb, **cfg)))
    return bank


def alone(bank: PromptBank, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [bank.methods[n].eval()(x[i : i + 1])[0] for i, n in enumerate(names)]


NAMES = ["shallow4", "deep4", "probe", "deep4_k2", "shallow4", "deep6", "shallow4b", "probe2",
         "deep4", "deep4", "shallow4b", "probe"]  # fmt: skip


@pytest.mark.parametrize("pool", ["token", "avg"])
@pytest.mark.parametrize("plan", ["mixed", "grouped", "auto"])
def test_every_plan_equals_each_task_alone(pool, plan):
    bank = make_bank(pool)
    x = torch.randn(len(NAMES), 1, 32, 32)
    out = bank(x, NAMES, plan=plan)
    ref = alone(bank, x, NAMES)
    assert len(out) == len(NAMES)
    for i, (o, r) in enumerate(zip(out, ref)):
        assert o.shape == r.shape == (bank.methods[NAMES[i]].config.num_classes,)
        torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5, msg=f"sample {i} ({NAMES[i]})")
    assert bank.last_plan in ("mixed", "grouped")
    assert all(o.is_inference() for o in out)  # ran under torch.inference_mode


def test_mixed_pass_groups_by_prompt_length_and_grouped_by_name():
    bank = make_bank()
    calls = []
    blk = bank.backbone.blocks[0]
    blk.register_forward_pre_hook(lambda m, a: calls.append(tuple(a[0].shape[:2])))
    x = torch.randn(len(NAMES), 1, 32, 32)
    bank.forward_mixed(x, NAMES)
    # one pass for n=4 (8 rows), one for n=6 (1 row), one prompt-free pass (3 rows)
    assert sorted(calls) == sorted([(8, 1 + 4 + 16), (1, 1 + 6 + 16), (3, 1 + 16)])
    calls.clear()
    bank.forward_grouped(x, NAMES)
    # one pass per prompt name; the two linear probes share one prompt-free pass
    assert len(calls) == 6 and (3, 17) in calls


def test_auto_times_once_per_signature_and_caches_choice(monkeypatch):
    bank = make_bank()
    timed = []
    real = bank._timed
    monkeypatch.setattr(bank, "_timed", lambda *a: timed.append(a[2]) or real(*a))
    x = torch.randn(len(NAMES), 1, 32, 32)
    bank(x, NAMES)
    assert len(timed) == 2 * bank.calibration_repeats  # both plans, alternating
    (sig, choice), = bank.plan_choices.items()  # fmt: skip
    assert choice["plan"] in ("mixed", "grouped") and choice["plan"] == bank.last_plan
    assert choice["mixed_s"] > 0 and choice["grouped_s"] > 0
    assert sig[3] == len(NAMES)
    bank(torch.randn(len(NAMES), 1, 32, 32), list(reversed(NAMES)))  # same signature
    assert len(timed) == 2 * bank.calibration_repeats
    bank(x[:5], NAMES[:5])  # new batch size -> new signature
    assert len(bank.plan_choices) == 2


def test_auto_skips_timing_when_both_plans_are_the_same(monkeypatch):
    bank = make_bank()
    monkeypatch.setattr(bank, "_timed", lambda *a: pytest.fail("should not time"))
    x = torch.randn(4, 1, 32, 32)
    bank(x, ["deep4", "deep4", "deep6", "probe"])  # one task per prompt length
    assert bank.last_plan == "grouped" and not bank.plan_choices


def test_calibrate_stores_choice():
    bank = make_bank()
    x = torch.randn(6, 1, 32, 32)
    names = ["shallow4", "deep4", "shallow4b"] * 2
    plan = bank.calibrate(x, names, repeats=1)
    assert plan in ("mixed", "grouped")
    assert next(iter(bank.plan_choices.values()))["plan"] == plan
    bank.add("extra", create("linear_probe", bank.backbone, num_classes=2))
    assert not bank.plan_choices  # composition of the bank changed


def test_one_backbone_in_memory_and_registry_rules():
    bank = make_bank()
    assert all(m.backbone is bank.backbone for m in bank.methods.values())
    n_backbone = sum(p.numel() for p in bank.backbone.parameters())
    n_prompts = sum(
        p.numel() for m in bank.methods.values() for p in m.parameters() if p.requires_grad
    )
    assert sum(p.numel() for p in bank.parameters()) == n_backbone + n_prompts
    assert bank.names[0] == "shallow4" and "probe" in bank and len(bank) == 7

    with pytest.raises(InputError, match="already exists"):
        bank.add("probe", create("linear_probe", bank.backbone, num_classes=2))
    new = create("linear_probe", bank.backbone, num_classes=2)
    bank.add("probe", new, replace=True)
    assert bank.methods["probe"] is new
    assert bank.remove("probe") is new and "probe" not in bank
    with pytest.raises(InputError, match="unknown prompt"):
        bank.remove("probe")
    with pytest.raises(InputError, match="without '.'"):
        bank.add("a.b", new)

    # same weights, different object: rebound to the bank's backbone (one copy kept)
    twin = create("vpt", vit(0), num_classes=3, num_tokens=2)
    bank.add("twin", twin)
    assert twin.backbone is bank.backbone
    # different weights: refused
    with pytest.raises(BackboneMismatchError, match="fingerprint"):
        bank.add("stranger", create("vpt", vit(seed=1), num_classes=3, num_tokens=2))


def test_bad_inputs():
    bank = make_bank()
    x = torch.randn(3, 1, 32, 32)
    with pytest.raises(InputError, match=r"unknown prompt 'nope' at sample 1; known: \['shallow4'"):
        bank(x, ["probe", "nope", "probe"])
    with pytest.raises(ShapeError, match="2 prompt names for a batch of 3"):
        bank(x, ["probe", "probe"])
    with pytest.raises(InputError, match="sequence of prompt names"):
        bank(x, "probe")
    with pytest.raises(InputError, match="plan must be one of"):
        bank(x, ["probe"] * 3, plan="fastest")
    with pytest.raises(InputError, match="empty"):
        PromptBank(vit())(x, ["a"] * 3)
    with pytest.raises(ShapeError):
        bank(torch.randn(3, 3, 32, 32), ["probe"] * 3)  # wrong channels, from the adapter


def test_load_from_checkpoint(tmp_path):
    bank = make_bank()
    save_prompt(bank.methods["deep4"], tmp_path / "deep4")
    other = PromptBank(vit(0))
    loaded = other.load(
        "d",
        create("vpt", other.backbone, num_classes=2, num_tokens=4, deep=True),
        tmp_path / "deep4",
    )
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(
        torch.stack(other(x, ["d", "d"])), torch.stack(bank(x, ["deep4"] * 2))
    )
    assert loaded is other.methods["d"]
    stranger = PromptBank(vit(seed=1))
    with pytest.raises(BackboneMismatchError):
        stranger.load(
            "d",
            create("vpt", stranger.backbone, num_classes=2, num_tokens=4, deep=True),
            tmp_path / "deep4",
        )
    assert "d" not in stranger


class _Opaque(PromptMethod):
    """A method without the bank interface: the bank runs it on its rows alone."""

    config_class = PromptConfig

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone, PromptConfig())
        self.head = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))


def test_methods_without_the_bank_interface_run_alone():
    bank = make_bank()
    bank.add("opaque", _Opaque(bank.backbone))
    names = ["opaque", "shallow4", "opaque", "probe"]
    x = torch.randn(4, 1, 32, 32)
    for plan in ("mixed", "grouped"):
        out = bank(x, names, plan=plan)
        for o, r in zip(out, alone(bank, x, names)):
            torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)

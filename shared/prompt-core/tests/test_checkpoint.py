"""polyprompt.core.checkpoint: prompt-only checkpoints and training-state files."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import polyprompt.core
from polyprompt.core import io as pp_io
from polyprompt.core.checkpoint import (
    PROMPT_CONFIG_FILE,
    PROMPT_WEIGHTS_FILE,
    load_prompt,
    load_state,
    load_torch_state,
    read_prompt_config,
    save_prompt,
    save_state,
    save_torch_state,
)
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import BackboneMismatchError, CheckpointError, InputError
from polyprompt.core.freezing import freeze_backbone
from polyprompt.core.methods.base import PromptMethod


@dataclass
class TinyConfig(PromptConfig):
    num_tokens: int = 4
    hidden: int = 8


class TinyPrompted(PromptMethod):
    config_class = TinyConfig
    method_name = "tiny_ckpt_test"
    version = "3"

    def __init__(self, backbone: nn.Module, config: TinyConfig) -> None:
        super().__init__(freeze_backbone(backbone), config)
        self.prompt = nn.Parameter(torch.randn(config.num_tokens, config.hidden))
        self.head = nn.Linear(config.hidden, 3)

    def forward(self, x):
        return self.head(self.backbone(x) + self.prompt.mean(0))


class OtherMethod(TinyPrompted):
    method_name = "other_ckpt_test"


def make(seed: int = 0, num_tokens: int = 4, backbone_seed: int = 0, cls=TinyPrompted):
    torch.manual_seed(backbone_seed)
    backbone = nn.Linear(5, 8)
    torch.manual_seed(seed)
    return cls(backbone, TinyConfig(num_tokens=num_tokens))


def trainable(model):
    return {k: v.clone() for k, v in model.trainable_state_dict().items()}


def test_save_load_roundtrip_identical(tmp_path):
    src = make(seed=1)
    out = save_prompt(src, tmp_path / "ckpt", extra={"val_accuracy": 0.9})
    assert out == tmp_path / "ckpt"
    assert sorted(p.name for p in out.iterdir()) == [PROMPT_WEIGHTS_FILE, PROMPT_CONFIG_FILE]
    dst = make(seed=2)
    backbone_before = {k: v.clone() for k, v in dst.backbone.state_dict().items()}
    assert not torch.equal(dst.prompt, src.prompt)
    assert load_prompt(dst, out) is dst
    for k, v in trainable(src).items():
        assert torch.equal(trainable(dst)[k], v), k
    for k, v in dst.backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k])
    x = torch.randn(3, 5)
    assert torch.equal(src(x), dst(x))
    # loaded params stay trainable leaves
    assert dst.prompt.requires_grad and dst.prompt.is_leaf


def test_checkpoint_holds_only_trainable_tensors_and_config(tmp_path):
    model = make()
    save_prompt(model, tmp_path, extra={"note": "x"})
    cfg = read_prompt_config(tmp_path)
    assert cfg["format"] == 1
    assert cfg["method"] == "tiny_ckpt_test"
    assert cfg["method_class"].endswith(":TinyPrompted")
    assert cfg["method_version"] == "3"
    assert cfg["polyprompt_version"] == polyprompt.core.__version__
    assert cfg["config"] == {"num_tokens": 4, "hidden": 8}
    assert cfg["backbone"] == model.backbone_identity()
    assert cfg["tensors"] == {
        "prompt": {"shape": [4, 8], "dtype": "float32"},
        "head.weight": {"shape": [3, 8], "dtype": "float32"},
        "head.bias": {"shape": [3], "dtype": "float32"},
    }
    assert cfg["extra"] == {"note": "x"}
    tensors, _ = load_state(tmp_path / PROMPT_WEIGHTS_FILE)
    assert set(tensors) == {"prompt", "head.weight", "head.bias"}  # no backbone weights


def test_missing_directory_and_files(tmp_path):
    model = make()
    with pytest.raises(CheckpointError, match="nowhere"):
        load_prompt(model, tmp_path / "nowhere")
    save_prompt(model, tmp_path)
    (tmp_path / PROMPT_WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=PROMPT_WEIGHTS_FILE):
        load_prompt(model, tmp_path)
    save_prompt(model, tmp_path)
    (tmp_path / PROMPT_CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=PROMPT_CONFIG_FILE):
        load_prompt(model, tmp_path)
    with pytest.raises(CheckpointError, match=PROMPT_CONFIG_FILE):
        read_prompt_config(tmp_path)


def test_corrupt_files_raise_checkpoint_error(tmp_path):
    model = make()
    save_prompt(model, tmp_path)
    weights = tmp_path / PROMPT_WEIGHTS_FILE
    good = weights.read_bytes()
    # flipped bytes inside the tensor data: caught by the SHA-256 in the config
    bad = bytearray(good)
    bad[-3] ^= 0xFF
    weights.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match=PROMPT_WEIGHTS_FILE):
        load_prompt(model, tmp_path)
    # garbage header: safetensors cannot parse it (config without a hash -> parse error)
    weights.write_bytes(b"\x00garbage" * 10)
    cfg = json.loads((tmp_path / PROMPT_CONFIG_FILE).read_text())
    cfg.pop("weights_sha256")
    (tmp_path / PROMPT_CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_prompt(model, tmp_path)
    # corrupt JSON
    weights.write_bytes(good)
    (tmp_path / PROMPT_CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_prompt(model, tmp_path)


def test_other_method_rejected(tmp_path):
    save_prompt(make(), tmp_path)
    with pytest.raises(CheckpointError, match="tiny_ckpt_test"):
        load_prompt(make(cls=OtherMethod), tmp_path)


def test_backbone_mismatch_names_fields(tmp_path):
    save_prompt(make(backbone_seed=0), tmp_path)
    other = make(backbone_seed=1)  # same architecture, other weights
    with pytest.raises(BackboneMismatchError, match="fingerprint: saved") as exc:
        load_prompt(other, tmp_path)
    assert isinstance(exc.value, CheckpointError)
    assert "class" not in str(exc.value).split("backbone;")[1].split(":")[0]
    assert load_prompt(other, tmp_path, strict_backbone=False) is other
    # a different architecture differs in more than the weights, even when not strict
    torch.manual_seed(0)
    wide = TinyPrompted(nn.Linear(6, 8), TinyConfig())
    with pytest.raises(BackboneMismatchError) as exc:
        load_prompt(wide, tmp_path, strict_backbone=False)
    msg = str(exc.value)
    assert "num_params: saved 48, current 56" in msg and "shapes_digest" in msg
    assert "fingerprint" not in msg


def test_tensor_shape_and_name_mismatch(tmp_path):
    save_prompt(make(num_tokens=4), tmp_path)
    with pytest.raises(CheckpointError, match=r"'prompt'.*\(4, 8\).*\(5, 8\)"):
        load_prompt(make(num_tokens=5), tmp_path)

    class Extra(TinyPrompted):
        def __init__(self, backbone, config):
            super().__init__(backbone, config)
            self.gate = nn.Parameter(torch.zeros(1))

    torch.manual_seed(0)
    extra = Extra(nn.Linear(5, 8), TinyConfig())
    with pytest.raises(CheckpointError, match=r"missing in checkpoint: \['gate'\]"):
        load_prompt(extra, tmp_path)


def test_save_prompt_validates_arguments(tmp_path):
    with pytest.raises(InputError, match="PromptMethod"):
        save_prompt(nn.Linear(2, 2), tmp_path)
    with pytest.raises(InputError, match="JSON"):
        save_prompt(make(), tmp_path, extra={"bad": object()})
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        save_prompt(make(), tmp_path / "file")


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    old = make(seed=1)
    save_prompt(old, tmp_path)
    new = make(seed=2)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    # a crash while writing the weights (the first file): both old files stay intact
    monkeypatch.setattr(pp_io.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_prompt(new, tmp_path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [PROMPT_WEIGHTS_FILE, PROMPT_CONFIG_FILE]
    probe = make(seed=3)
    load_prompt(probe, tmp_path)
    assert torch.equal(probe.prompt, old.prompt)


def test_interrupted_between_files_is_detected(tmp_path, monkeypatch):
    save_prompt(make(seed=1), tmp_path)
    import polyprompt.core.checkpoint as ck

    def crash(*args, **kwargs):
        raise OSError("killed")

    # the weights are replaced, then the process dies before the config is written
    monkeypatch.setattr(ck, "atomic_write_text", crash)
    with pytest.raises(OSError):
        save_prompt(make(seed=2), tmp_path)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="interrupted"):
        load_prompt(make(seed=3), tmp_path)


def test_state_files_roundtrip_and_errors(tmp_path):
    t = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2])}
    path = save_state(tmp_path / "s.safetensors", t, {"epoch": 2, "history": [{"loss": 0.5}]})
    tensors, meta = load_state(path)
    assert meta == {"epoch": 2, "history": [{"loss": 0.5}]}
    assert all(torch.equal(tensors[k], v) for k, v in t.items())
    with pytest.raises(CheckpointError, match="missing"):
        load_state(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        load_state(tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match="JSON"):
        save_state(tmp_path / "x.safetensors", t, {"x": object()})


def test_torch_state_weights_only(tmp_path):
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    path = save_torch_state(tmp_path / "opt.pt", {"optimizer": opt.state_dict(), "scheduler": None})
    state = load_torch_state(path)
    opt2 = torch.optim.AdamW([nn.Parameter(torch.ones(3))], lr=0.1)
    opt2.load_state_dict(state["optimizer"])
    assert torch.equal(
        opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )

    # arbitrary pickled objects are refused (weights_only=True)
    from fractions import Fraction

    torch.save({"x": Fraction(1, 3)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_torch_state(tmp_path / "evil.pt")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:30])
    with pytest.raises(CheckpointError, match=r"trunc\.pt"):
        load_torch_state(tmp_path / "trunc.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_torch_state(tmp_path / "absent.pt")


def test_check_state_dict_names_every_kind_of_mismatch():
    from polyprompt.core.checkpoint import check_state_dict

    expected = {"a.weight": torch.zeros(2, 3), "b.bias": torch.zeros(3), "head.w": torch.zeros(1)}
    check_state_dict(dict(expected), expected, "ok")  # fits: no error
    check_state_dict(
        {"a.weight": torch.ones(2, 3), "b.bias": torch.ones(3)},
        expected,
        "tied head",
        may_miss=lambda k: k.startswith("head."),
    )
    bad = {"a.weight": torch.zeros(3, 2), "extra": torch.zeros(1), "head.w": torch.zeros(1)}
    with pytest.raises(CheckpointError) as err:
        check_state_dict(bad, expected, "ckpt.safetensors")
    msg = str(err.value)
    assert msg.startswith("ckpt.safetensors: wrong shapes ['a.weight: checkpoint (3, 2) vs model")
    assert "missing keys ['b.bias']" in msg and "unexpected keys ['extra']" in msg

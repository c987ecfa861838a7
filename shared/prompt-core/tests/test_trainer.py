"""polyprompt.core.trainer: config validation, training, early stopping, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import polyprompt.core.trainer as trainer_mod
from polyprompt.core.errors import CheckpointError, ConfigError, InputError, NonFiniteError
from polyprompt.core.freezing import freeze_backbone
from polyprompt.core.trainer import (
    MANIFEST_FILE,
    Callback,
    Trainer,
    TrainerConfig,
    TrainResult,
)


def make_data(n: int = 96, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return TensorDataset(x, y)


class PromptedMLP(nn.Module):
    """Frozen 'backbone', a trainable additive prompt, dropout and a trainable head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = freeze_backbone(nn.Sequential(nn.Linear(6, 16), nn.Tanh()))
        self.prompt = nn.Parameter(torch.zeros(16))
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.drop(self.backbone(x) + self.prompt))


def make_model(seed: int = 0) -> PromptedMLP:
    torch.manual_seed(seed)
    return PromptedMLP()


def trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def cfg(**kw) -> TrainerConfig:
    base = {"epochs": 4, "batch_size": 16, "lr": 0.05, "progress": False, "seed": 3}
    base.update(kw)
    return TrainerConfig(**base)


def losses(result: TrainResult, key: str = "train_loss") -> list:
    return [h[key] for h in result.history]


# -- config -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("batch_size", -1),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("weight_decay", -1.0),
        ("momentum", 1.0),
        ("warmup_epochs", 20),
        ("grad_clip", 0.0),
        ("seed", -1),
        ("early_stopping_patience", 0),
        ("num_workers", -2),
        ("device", "tpu-9000"),
        ("progress", "yes"),
        ("epochs", True),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=rf"TrainerConfig\.{field}"):
        TrainerConfig(**{field: value})


def test_config_enums_and_json_roundtrip(tmp_path):
    c = TrainerConfig(
        optimizer="sgd", scheduler="cosine", monitor="val_loss", checkpoint_dir=tmp_path
    )
    assert c.optimizer is trainer_mod.OptimizerName.SGD
    assert c.checkpoint_dir == str(tmp_path)
    assert TrainerConfig.from_json(c.to_json()) == c
    with pytest.raises(ConfigError, match="optimizer"):
        TrainerConfig(optimizer="lion")


def test_trainer_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="unknown metric"):
        Trainer(cfg(), metric="top7")
    with pytest.raises(ConfigError, match="monitor"):
        Trainer(cfg(), metric=None)
    with pytest.raises(ConfigError, match="TrainerConfig"):
        Trainer({"epochs": 2})
    with pytest.raises(ConfigError, match="on_epoch_end"):
        Trainer(cfg(), callbacks=[object()])


# -- training -------------------------------------------------------------------------------
def test_fit_learns_and_trains_only_trainable_params():
    model = make_model()
    frozen_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    data = make_data()
    result = Trainer(cfg(epochs=6)).fit(model, data, val=make_data(48, seed=1))
    assert result.epochs_run == 6 and len(result.history) == 6
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    assert set(result.history[0]) >= {"epoch", "train_loss", "val_loss", "val_metric", "seconds"}
    assert result.history[-1]["train_loss"] < 0.8 * result.history[0]["train_loss"]
    assert result.best_metric == max(losses(result, "val_metric"))
    assert result.best_metric > 0.7
    assert not torch.equal(model.head.weight, head_before)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, frozen_before[k]), k


def test_nothing_to_train_raises():
    model = freeze_backbone(nn.Linear(6, 3))
    with pytest.raises(ConfigError, match="requires_grad"):
        Trainer(cfg()).fit(model, make_data())


def test_bad_data_raises():
    t = Trainer(cfg())
    with pytest.raises(InputError, match="Dataset or DataLoader"):
        t.fit(make_model(), 42)
    with pytest.raises(InputError, match="empty"):
        t.fit(make_model(), TensorDataset(torch.zeros(0, 6), torch.zeros(0).long()))
    with pytest.raises(InputError, match="nn.Module"):
        t.fit("model", make_data())
    with pytest.raises(InputError, match=r"\(inputs, targets\)"):
        t.fit(make_model(), TensorDataset(torch.zeros(8, 6)))
    with pytest.raises(ConfigError, match="early stopping needs"):
        Trainer(cfg(early_stopping_patience=2)).fit(make_model(), make_data())


def test_non_finite_loss_raises():
    def nan_step(model, batch):
        x, y = batch
        logits = model(x)
        return logits.sum() * float("nan"), logits, y

    with pytest.raises(NonFiniteError, match="epoch 1, step 1"):
        Trainer(cfg(), step_fn=nan_step).fit(make_model(), make_data())


def test_dataloader_input_custom_step_and_callable_metric():
    data = make_data()
    loader = DataLoader(
        [{"x": x, "y": y} for x, y in data], batch_size=32, shuffle=True
    )  # dict batches

    def step(model, batch):
        logits = model(batch["x"])
        return nn.functional.cross_entropy(logits, batch["y"]), logits, batch["y"]

    seen = {}

    def metric(preds, targets):
        seen["n"] = len(targets)
        return float((preds.argmax(1) == targets).float().mean())

    t = Trainer(cfg(epochs=2, optimizer="sgd", momentum=0.5), step_fn=step, metric=metric)
    result = t.fit(make_model(), loader, val=loader)
    assert seen["n"] == len(data)
    assert 0.0 <= result.history[-1]["val_metric"] <= 1.0


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_other_optimizers_and_scheduler(opt):
    t = Trainer(cfg(epochs=3, optimizer=opt, scheduler="cosine", warmup_epochs=1))
    result = t.fit(make_model(), make_data())
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] > lrs[1] > lrs[2] >= 0  # warm-up ends at lr, cosine decays to 0
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_evaluate_matches_manual_computation():
    model = make_model()
    data = make_data(40)
    t = Trainer(cfg(batch_size=7))
    out = t.evaluate(model, data)
    model.eval()
    with torch.no_grad():
        logits = model(data.tensors[0])
    assert out["loss"] == pytest.approx(
        float(nn.functional.cross_entropy(logits, data.tensors[1])), rel=1e-5
    )
    assert out["metric"] == pytest.approx(
        float((logits.argmax(1) == data.tensors[1]).float().mean())
    )
    assert model.training is False  # evaluate leaves the mode as it found it


def test_early_stopping_and_restore_best():
    values = iter([0.5, 0.9, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0])
    snapshots = {}

    class Snap(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            snapshots[epoch] = trainable(model)

    model = make_model()
    t = Trainer(
        cfg(epochs=8, early_stopping_patience=2),
        metric=lambda p, y: next(values),
        callbacks=[Snap()],
    )
    result = t.fit(model, make_data(), val=make_data(32, seed=2))
    assert result.stopped_early and result.epochs_run == 4
    assert result.best_epoch == 2 and result.best_metric == pytest.approx(0.9)
    for k, v in trainable(model).items():
        assert torch.equal(v, snapshots[2][k])
    assert not torch.equal(snapshots[4]["head.weight"], snapshots[2]["head.weight"])


def test_monitor_val_loss_and_callback_stop():
    class StopAt2(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 2:
                trainer.should_stop = True

    t = Trainer(cfg(epochs=5, monitor="val_loss"), metric=None, callbacks=[StopAt2()])
    result = t.fit(make_model(), make_data(), val=make_data(32, seed=2))
    assert result.epochs_run == 2 and result.stopped_early
    assert result.history[0]["val_metric"] is None
    assert result.best_metric == min(losses(result, "val_loss"))


def test_progress_bar_shows_loss(capsys):
    Trainer(cfg(epochs=1, progress=True)).fit(make_model(), make_data(), val=make_data(32))
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "val_accuracy=" in err


def test_seeded_runs_are_identical():
    r1 = Trainer(cfg(epochs=2)).fit(m1 := make_model(), make_data())
    r2 = Trainer(cfg(epochs=2)).fit(m2 := make_model(), make_data())
    assert losses(r1) == losses(r2)
    for k, v in trainable(m1).items():
        assert torch.equal(v, trainable(m2)[k])


# -- exact resume ---------------------------------------------------------------------------
def assert_same_run(model_a, result_a, model_b, result_b):
    for k, v in trainable(model_a).items():
        assert torch.equal(v, trainable(model_b)[k]), k
    for key in ("train_loss", "val_loss", "val_metric", "lr"):
        assert losses(result_a, key) == losses(result_b, key), key
    assert (result_a.best_epoch, result_a.best_metric) == (
        result_b.best_epoch,
        result_b.best_metric,
    )
    assert result_a.epochs_run == result_b.epochs_run


def perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)


def test_resume_after_shorter_run_is_bit_identical(tmp_path):
    data, val = make_data(), make_data(32, seed=1)
    ref_model = make_model()
    ref = Trainer(cfg(epochs=4)).fit(ref_model, data, val)

    part = Trainer(cfg(epochs=2, checkpoint_dir=str(tmp_path))).fit(make_model(), data, val)
    assert part.epochs_run == 2
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["epoch"] == 2
    resumed_model = make_model()
    perturb(resumed_model)  # the checkpoint, not the init, must decide the weights
    resumed = Trainer(cfg(epochs=4, checkpoint_dir=str(tmp_path))).fit(resumed_model, data, val)
    assert_same_run(ref_model, ref, resumed_model, resumed)
    # only the last epoch's files are kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [MANIFEST_FILE, "trainer_epoch0004.optim.pt", "trainer_epoch0004.safetensors"]
    )
    # resuming a finished run trains nothing and returns the same result
    again_model = make_model()
    again = Trainer(cfg(epochs=4, checkpoint_dir=str(tmp_path))).fit(again_model, data, val)
    assert_same_run(ref_model, ref, again_model, again)


class Interrupt(Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.at:
            raise KeyboardInterrupt


def test_resume_after_interrupt_cosine_early_stopping(tmp_path):
    data, val = make_data(), make_data(32, seed=1)
    kw = {
        "epochs": 5,
        "scheduler": "cosine",
        "warmup_epochs": 1,
        "weight_decay": 0.01,
        "early_stopping_patience": 4,
        "monitor": "val_loss",
    }
    ref_model = make_model()
    ref = Trainer(cfg(**kw)).fit(ref_model, data, val)

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg(checkpoint_dir=str(tmp_path), **kw), callbacks=[Interrupt(3)]).fit(
            make_model(), data, val
        )
    resumed_model = make_model()
    perturb(resumed_model)
    resumed = Trainer(cfg(checkpoint_dir=str(tmp_path), **kw)).fit(resumed_model, data, val)
    assert_same_run(ref_model, ref, resumed_model, resumed)


def test_resume_false_starts_over(tmp_path):
    data = make_data()
    Trainer(cfg(epochs=2, checkpoint_dir=str(tmp_path))).fit(make_model(), data)
    fresh = Trainer(cfg(epochs=1, checkpoint_dir=str(tmp_path), resume=False)).fit(
        make_model(), data
    )
    assert fresh.epochs_run == 1
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["epoch"] == 1


def test_failure_during_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    data = make_data()
    ref_model = make_model()
    ref = Trainer(cfg(epochs=4)).fit(ref_model, data)

    real = trainer_mod.save_torch_state
    calls = {"n": 0}

    def flaky(path, state):
        calls["n"] += 1
        if calls["n"] == 3:  # the optimizer file of epoch 3: "crash" mid-checkpoint
            raise OSError("disk full")
        return real(path, state)

    monkeypatch.setattr(trainer_mod, "save_torch_state", flaky)
    with pytest.raises(OSError, match="disk full"):
        Trainer(cfg(epochs=4, checkpoint_dir=str(tmp_path))).fit(make_model(), data)
    monkeypatch.undo()
    _, meta, _ = Trainer.read_checkpoint(tmp_path)  # still the epoch-2 checkpoint
    assert meta["epoch"] == 2
    resumed_model = make_model()
    resumed = Trainer(cfg(epochs=4, checkpoint_dir=str(tmp_path))).fit(resumed_model, data)
    assert_same_run(ref_model, ref, resumed_model, resumed)


def test_corrupt_checkpoint_raises(tmp_path):
    data = make_data()
    Trainer(cfg(epochs=1, checkpoint_dir=str(tmp_path))).fit(make_model(), data)
    state_file = tmp_path / "trainer_epoch0001.safetensors"
    good = state_file.read_bytes()
    state_file.write_bytes(good[: len(good) // 2])  # truncated
    t = Trainer(cfg(epochs=2, checkpoint_dir=str(tmp_path)))
    with pytest.raises(CheckpointError, match="trainer_epoch0001.safetensors"):
        t.fit(make_model(), data)
    state_file.write_bytes(good)
    (tmp_path / "trainer_epoch0001.optim.pt").unlink()
    with pytest.raises(CheckpointError, match=r"optim\.pt.*missing"):
        t.fit(make_model(), data)
    (tmp_path / MANIFEST_FILE).write_text("{")
    with pytest.raises(CheckpointError, match=MANIFEST_FILE):
        t.fit(make_model(), data)


def test_resume_into_other_model_raises(tmp_path):
    data = make_data()
    Trainer(cfg(epochs=1, checkpoint_dir=str(tmp_path))).fit(make_model(), data)
    other = make_model()
    other.extra = nn.Parameter(torch.zeros(2))
    with pytest.raises(CheckpointError, match=r"missing in checkpoint: \['extra'\]"):
        Trainer(cfg(epochs=2, checkpoint_dir=str(tmp_path))).fit(other, data)


def test_resume_with_changed_config_warns(tmp_path):
    data = make_data()
    Trainer(cfg(epochs=1, checkpoint_dir=str(tmp_path))).fit(make_model(), data)
    with pytest.warns(UserWarning, match="lr"):
        Trainer(cfg(epochs=2, lr=0.01, checkpoint_dir=str(tmp_path))).fit(make_model(), data)


def test_batch_objects_with_their_own_to_are_moved():
    pyg = pytest.importorskip("torch_geometric.data")  # the dev environment has every package
    from polyprompt.core.trainer import _to_device

    graph = pyg.Data(x=torch.zeros(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]))
    batch = pyg.Batch.from_data_list([graph, graph])
    # the meta device shows the move happened without needing a GPU
    moved = _to_device((batch, torch.zeros(2)), torch.device("meta"), False)
    assert isinstance(moved[0], pyg.Batch) and moved[0].num_graphs == 2
    assert moved[0].x.device.type == "meta" and moved[1].device.type == "meta"
    assert _to_device("text", torch.device("meta"), False) == "text"


# -- learning-rate groups and per-step callbacks ------------------------------------------
def test_lr_multipliers_scale_the_named_groups():
    model = make_model()
    before = trainable(model)
    trainer = Trainer(cfg(epochs=1, lr_multipliers={"head.": 10.0}, optimizer="sgd", momentum=0.0))
    trainer.fit(model, make_data())
    groups = {
        len(g["params"]): g["lr"]
        for g in trainer._optimizer(
            [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        ).param_groups
    }
    assert groups == {2: pytest.approx(0.5), 1: pytest.approx(0.05)}  # head (w, b) vs prompt
    assert not torch.equal(before["head.weight"], model.head.weight)
    with pytest.raises(ConfigError, match="lr_multipliers"):
        TrainerConfig(lr_multipliers={"head.": 0.0})
    with pytest.raises(ConfigError, match="no trainable parameter name starts with"):
        Trainer(cfg(epochs=1, lr_multipliers={"missing.": 2.0})).fit(make_model(), make_data())


class StepCounter(Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, trainer, model, step):
        assert isinstance(model, PromptedMLP)
        self.steps.append(step)


def test_step_callback_counts_steps_across_a_resume(tmp_path):
    data = make_data()  # 96 samples / 16 = 6 steps per epoch
    first = StepCounter()
    Trainer(cfg(epochs=2, checkpoint_dir=str(tmp_path)), callbacks=[first]).fit(make_model(), data)
    assert first.steps == list(range(1, 13))
    second = StepCounter()
    Trainer(cfg(epochs=3, checkpoint_dir=str(tmp_path)), callbacks=[second]).fit(make_model(), data)
    assert second.steps == list(range(13, 19))


def test_custom_param_groups_and_lr_schedule():
    seen: list[tuple[int, int]] = []

    def groups(named):
        head = [p for n, p in named if n.startswith("head.")]
        rest = [p for n, p in named if not n.startswith("head.")]
        return [{"params": head, "lr": 0.5, "weight_decay": 0.0}, {"params": rest}]

    def schedule(step, total):
        seen.append((step, total))
        return 1.0 - step / total

    trainer = Trainer(
        cfg(epochs=2, optimizer="sgd", momentum=0.0), param_groups=groups, lr_schedule=schedule
    )
    trainer.fit(make_model(), make_data())  # 6 steps per epoch
    assert seen[0] == (0, 12) and seen[-1] == (12, 12)
    with pytest.raises(ConfigError, match="left out trainable parameters"):
        Trainer(cfg(epochs=1), param_groups=lambda named: [{"params": [named[0][1]]}]).fit(
            make_model(), make_data()
        )
    with pytest.raises(ConfigError, match="lr_schedule must be callable"):
        Trainer(cfg(), lr_schedule=3)


# -- CUDA (marker `cuda`; skipped without a GPU; ran on an H100 in session 8) --------------------
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_cfg(**kw) -> TrainerConfig:
    return cfg(**{"device": "cuda", "amp": True, **kw})


@pytest.mark.cuda
@cuda_only
@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
def test_fit_on_cuda_with_amp_learns_and_trains_only_trainable(amp_dtype):
    model = make_model()
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    result = Trainer(cuda_cfg(epochs=6, amp_dtype=amp_dtype)).fit(
        model, make_data(), val=make_data(48, seed=1)
    )
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert last < 0.8 * first, (first, last)
    assert result.best_metric > 0.7
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v.cpu(), frozen[k]), k


@pytest.mark.cuda
@cuda_only
def test_resume_on_cuda_with_grad_scaler_is_bit_identical(tmp_path):
    data, val = make_data(), make_data(32, seed=1)
    ref_model = make_model()
    ref = Trainer(cuda_cfg(epochs=4)).fit(ref_model, data, val)
    Trainer(cuda_cfg(epochs=2, checkpoint_dir=str(tmp_path))).fit(make_model(), data, val)
    resumed_model = make_model()
    with torch.no_grad():  # the checkpoint, not the init, must decide the weights
        resumed_model.prompt.add_(1.0)
    resumed = Trainer(cuda_cfg(epochs=4, checkpoint_dir=str(tmp_path))).fit(
        resumed_model, data, val
    )
    for k, v in trainable(ref_model).items():
        assert torch.equal(v, trainable(resumed_model)[k]), k
    assert [h["train_loss"] for h in ref.history] == [h["train_loss"] for h in resumed.history]

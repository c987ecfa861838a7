"""One real leave-one-subject-out scenario end to end (tiny backbone, seeded, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from polyprompt.core.errors import ConfigError, InputError
from polyprompt.timeseries.pipeline import PipelineConfig, prepare_split, run_scenario

TINY = dict(
    d_model=16, n_heads=2, d_ff=32, pretrain_epochs=3, prompt_epochs=2, target_epochs=8,
    adapt_epochs=8, target_only_epochs=8, dann_epochs=1, batch_size=64,
)  # fmt: skip


@pytest.fixture(scope="module")
def four_subjects(watch):
    return watch.of_domains([0, 1, 2, 3])  # target subject "1" + 3 sources


def test_split_normalised_on_sources_only(four_subjects):
    split = prepare_split(four_subjects, 0, PipelineConfig(**TINY), seed=0)
    assert split.source_ids == [1, 2, 3]
    np.testing.assert_allclose(split.sources.X.mean(axis=(0, 2)), 0, atol=1e-4)
    assert not set(split.shots.group) & set(split.test.group)
    assert abs(split.test.X.mean(axis=(0, 2))).max() > 1e-3  # target statistics were not used


def test_pond_scenario_end_to_end_on_real_data(four_subjects):
    """Mechanics at a tiny size (a 16-wide backbone pre-trained for 3 epochs: its F1s are
    seed luck, so no quality claim here; that is the slow test below and the benchmark)."""
    cfg = PipelineConfig(**TINY, methods=("target_only", "source_only", "single_source_oracle",
                                          "single_source_selected", "pond"))  # fmt: skip
    res = run_scenario(four_subjects, 0, cfg, seed=0)
    f1 = {m: v["f1"] for m, v in res["methods"].items()}
    assert set(f1) == set(cfg.methods)
    assert all(0.0 <= v <= 1.0 for v in f1.values())
    assert f1["single_source_oracle"] == max(res["single_source_f1"])
    assert f1["single_source_selected"] == res["single_source_f1"][res["selection"]["chosen"]]
    sel = res["selection"]
    assert len(sel["similarity"]) == 3 and sel["chosen"] in (0, 1, 2)
    # default similarity: class-wise centroid distances (<= 0), not cosines of the prompts
    assert cfg.similarity.value == "class_centroid" and all(v <= 0 for v in sel["similarity"])
    assert res["methods"]["pond"]["trainable_percent"] < 100
    # step 1 is cached: a second scenario run with the same sources loads it
    res2 = run_scenario(four_subjects, 0, cfg.replace(methods=("source_only",)), seed=0)
    assert res2["pretrain"]["from_cache"] and res2["methods"]["source_only"]["f1"] == pytest.approx(
        f1["source_only"]
    )


def test_unsupervised_target_and_dann(four_subjects):
    cfg = PipelineConfig(**TINY, shots=0)
    res = run_scenario(four_subjects, 0, cfg, seed=0)
    assert "finetune" not in res["methods"] and "target_only" not in res["methods"]
    assert {"pond", "dann", "source_only"} <= set(res["methods"])


def test_bad_scenarios(four_subjects):
    with pytest.raises(InputError, match="target domain"):
        run_scenario(four_subjects, 12, PipelineConfig(**TINY))
    one_class = four_subjects.subset(~((four_subjects.domain == 2) & (four_subjects.y != 0)))
    with pytest.raises(InputError, match="single class"):
        run_scenario(one_class, 0, PipelineConfig(**TINY))
    with pytest.raises(ConfigError, match="methods"):
        PipelineConfig(methods=("magic",))


def test_inceptiontime_baselines(four_subjects):
    cfg = PipelineConfig(
        **{**TINY, "pretrain_epochs": 1, "adapt_epochs": 2, "target_only_epochs": 2},
        methods=(
            "inceptiontime_target_only",
            "inceptiontime_source_only",
            "inceptiontime_finetune",
        ),
    )
    res = run_scenario(four_subjects.of_domains([0, 1]), 0, cfg, seed=0)  # one source: fast
    assert set(res["methods"]) == set(cfg.methods)
    assert all(0 <= v["f1"] <= 1 for v in res["methods"].values())
    assert res["methods"]["inceptiontime_finetune"]["trainable_percent"] == pytest.approx(100.0)


def test_step3_options_and_replay_baselines(four_subjects):
    from polyprompt.timeseries.pipeline import source_replay

    cfg = PipelineConfig(
        **TINY,
        adapt_init="common",
        adapt_replay="all",
        methods=("source_only", "finetune_replay", "prompt_tuning_replay", "pond"),
    )
    split = prepare_split(four_subjects, 0, cfg, seed=0)
    idx = source_replay(split, cfg, seed=0)
    assert len(idx) == len(split.sources) // 3 and len(set(idx.tolist())) == len(idx)
    assert len(np.unique(split.sources.domain[idx])) > 1  # drawn from all sources, not one
    np.testing.assert_array_equal(idx, source_replay(split, cfg, seed=0))  # seeded
    res = run_scenario(four_subjects, 0, cfg, seed=0)
    assert set(res["methods"]) == set(cfg.methods)
    assert all(0.0 <= v["f1"] <= 1.0 for v in res["methods"].values())
    with pytest.raises(ConfigError, match="adapt_init"):
        PipelineConfig(adapt_init="random")
    with pytest.raises(ConfigError, match="adapt_replay"):
        PipelineConfig(adapt_replay="some")


def test_adapt_target_trains_only_the_target_slot(four_subjects):
    """Step 3 (``adapt_target``): the target slot starts as a copy of the chosen source and
    then moves; the source prompts, the head and the backbone do not; the step-3 loss
    overrides are reset afterwards; ``shots=None`` only sets the start."""
    import torch

    from polyprompt.timeseries.pipeline import _local_domains, adapt_target, pretrain_tst

    cfg = PipelineConfig(**TINY)
    split = prepare_split(four_subjects, 0, cfg, seed=0)
    pre = pretrain_tst(split.sources, cfg)
    xs, ys, _ = split.sources.tensors()
    ds = torch.from_numpy(_local_domains(split.sources, split.source_ids))
    xq, yq, _ = split.shots.tensors()
    torch.manual_seed(0)
    model = pre.pond(cfg.pond(pre.num_classes, len(split.source_ids)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = model.target_id
    adapt_target(model, cfg, split, 0, 1, None, (xs, ys, ds))
    torch.testing.assert_close(model.domain_prompts[t], model.domain_prompts[1])
    start = model.domain_prompts[t].detach().clone()
    adapt_target(model, cfg, split, 0, 1, (xq, yq), (xs, ys, ds))
    assert not torch.equal(model.domain_prompts[t], start)  # the target prompt trained
    assert model.loss_overrides == {}
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith(("backbone.", "head.", "common")) or key.startswith(
            tuple(f"{name}.{i}" for name in ("domain_prompts", "generators") for i in range(t))
        ):
            torch.testing.assert_close(after[key], value, msg=key)


@pytest.mark.slow
def test_pond_beats_training_on_the_shots_with_the_default_config(watch):
    """Default PipelineConfig, one held-out subject that no default was chosen on (subject 8,
    benchmark README), 3 seeds: POND's transferred prompts beat a model trained on the few
    shots alone by a wide margin and beat chance (macro-F1 ~0.14 for 7 classes) many times over."""
    cfg = PipelineConfig(methods=("target_only", "pond"))
    target = list(watch.domain_names).index("8")
    runs = [run_scenario(watch, target, cfg, seed=s)["methods"] for s in (0, 1, 2)]
    pond = np.mean([r["pond"]["f1"] for r in runs])
    target_only = np.mean([r["target_only"]["f1"] for r in runs])
    assert pond > target_only + 0.3, (pond, target_only)
    assert pond > 0.55, pond

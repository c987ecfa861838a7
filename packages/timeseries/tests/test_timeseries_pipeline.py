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


def test_pond_beats_target_only_on_real_data(four_subjects):
    cfg = PipelineConfig(**TINY, methods=("target_only", "source_only", "single_source_oracle",
                                          "single_source_selected", "pond"))  # fmt: skip
    res = run_scenario(four_subjects, 0, cfg, seed=0)
    f1 = {m: v["f1"] for m, v in res["methods"].items()}
    assert set(f1) == set(cfg.methods)
    assert all(0.0 <= v <= 1.0 for v in f1.values())
    # transferred prompts on a source-pre-trained backbone beat training on the few shots alone
    assert f1["pond"] > f1["target_only"] + 0.1, f1
    assert f1["pond"] > 0.3, f1  # chance macro-F1 for 7 classes is ~0.14
    assert f1["single_source_oracle"] >= f1["single_source_selected"]
    sel = res["selection"]
    assert len(sel["similarity"]) == 3 and sel["chosen"] in (0, 1, 2)
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

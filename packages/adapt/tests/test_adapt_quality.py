"""CoDA beats its baselines on the hard (dark) target group (seed 0 of the example): real scenes, seeded (slow: ~5 min
on 2 quiet cores, most of it the in-situ source pre-training)."""

import copy

import pytest
import torch


@pytest.mark.slow
def test_coda_beats_source_only_and_self_training_on_hard_scenes():
    from polyprompt.adapt.backbone import MiTConfig
    from polyprompt.adapt.data.scenes import SceneTaskConfig, build_digit_scenes
    from polyprompt.adapt.demo import DemoSettings
    from polyprompt.adapt.evaluate import evaluate_segmentation
    from polyprompt.adapt.method import CoDA, CoDAConfig
    from polyprompt.adapt.pretrain import PretrainConfig, pretrain_source
    from polyprompt.adapt.selftrain import SelfTrainingConfig, UDATrainer, Variant

    st = DemoSettings()
    task = build_digit_scenes(
        SceneTaskConfig(
            image_size=st.image_size,
            n_source=st.n_source,
            n_target_train=st.n_target_train,
            n_target_test=st.n_target_test,
        )
    )
    net = pretrain_source(task.source, MiTConfig.small(), PretrainConfig(), progress=False)
    hard = {}
    for variant in (Variant.SOURCE_ONLY, Variant.SELF_TRAINING, Variant.CODA):
        torch.manual_seed(0)
        model = CoDA(
            copy.deepcopy(net),
            CoDAConfig(
                image_size=64,
                patch_size=8,
                use_savpt=variant.uses_savpt,
                prompt_lr_mult=st.prompt_lr_mult,
            ),
        )
        cfg = SelfTrainingConfig.scaled(
            st.iterations,
            iters_per_epoch=st.iterations,
            batch_size=4,
            lr=st.lr,
            mic=False,
            mask_block_size=8,
        )
        UDATrainer(cfg, variant, progress=False).fit(model, task.source, task.target_train)
        hard[variant.value] = evaluate_segmentation(model, task.target_test)["hard"]["miou"]
    # measured (benchmarks/results/adapt.json, seed 0): source-only 0.270, self-training 0.345,
    # CoDA 0.366 -- the order. With the eval-mode teacher (the session-1 bug)
    # self-training fell below source-only (0.239 vs 0.363 then). Self-training's lead over
    # source-only is not stable across seeds (seed 2: 0.268 vs 0.286; see the README).
    assert hard["coda"] > hard["self_training"] > hard["source_only"], hard

"""Development protocol that chose POND's selection and step-3 defaults on pseudo-scenarios.

    python examples/timeseries/pond_dev_protocol.py                  # subject 1 held out, 2 3 4 x seeds 0 1
    python examples/timeseries/pond_dev_protocol.py --pseudo 2 3 4 5 6 7 --seeds 0 1 2   # session 6

Protocol (inner leave-one-source-out): one subject (``--holdout``) is removed from the data
altogether. Each ``--pseudo`` subject is then a pseudo-target whose sources are the remaining
8 subjects; its shots / test split is the same recording split as in the benchmark. For each
pseudo-target the script trains POND's steps 1, 2a and 2b once, then compares step-3 variants
(``adapt_init`` x ``adapt_replay`` x ``adapt_train_head``) and diagnostics (source-only, every
single source prompt, the uniform mixture of the source prompts, the selection criteria).
Both similarity criteria (``"prompt_cosine"``, ``"class_centroid"``) are scored on every
pseudo-scenario; the step-3 variants start from the source chosen with ``cfg.similarity``.
The defaults in ``PipelineConfig`` (``similarity="class_centroid"``, ``adapt_init="source"``,
``adapt_replay="all"``) are the best here with ``--pseudo 2 3 4 5 6 7 --seeds 0 1 2``
(session 6; sessions 2-5 chose ``adapt_replay="none"`` with the prompt cosine on
``--pseudo 2 3 4 --seeds 0 1``).
The benchmark's ``--quick`` subset (subjects 8, 9, 10) never served as a pseudo-target.

The README's development table was measured with this script's predecessor (same protocol and
variants; its ``"all"`` replay drew a different random sample), so a rerun can differ slightly.
This is a development tool: it uses the pipeline's internal helpers (step 3 is the pipeline's own
:func:`~polyprompt.timeseries.pipeline.adapt_target`) and prints JSON lines.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--holdout", default="1", help="subject removed from everything")
    ap.add_argument("--pseudo", nargs="+", default=["2", "3", "4"], help="pseudo-target subjects")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=JSON",
        help="PipelineConfig overrides, e.g. --set lambda_dd=0.1",
    )
    ap.add_argument("--variants", nargs="+", default=None, help="step-3 variants (default: all)")
    args = ap.parse_args(argv)

    import torch
    from scipy.stats import spearmanr
    from torch.utils.data import TensorDataset

    from polyprompt.timeseries.demo import load_data
    from polyprompt.timeseries.method import pond_step
    from polyprompt.timeseries.pipeline import (
        PipelineConfig,
        _local_domains,
        _trainer,
        adapt_target,
        macro_f1,
        predict,
        prepare_split,
        pretrain_tst,
    )
    from polyprompt.timeseries.selection import select_source

    torch.set_num_threads(1)
    full = load_data(None)
    names = list(full.domain_names)
    if args.holdout in args.pseudo:
        ap.error("--holdout must not be a pseudo-target")
    data = full.of_domains([d for d in range(full.num_domains) if names[d] != args.holdout])
    try:
        overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
        cfg = PipelineConfig(**overrides)
    except (ValueError, TypeError) as exc:  # not KEY=JSON, or not a PipelineConfig field / value
        ap.error(f"--set takes KEY=JSON pairs of PipelineConfig fields: {exc}")
    variants = {
        "source/chosen": ("source", "chosen", False),
        "source/none": ("source", "none", False),
        "source/all": ("source", "all", False),
        "common/all": ("common", "all", False),
        "source/all+head": ("source", "all", True),
    }
    if args.variants:
        unknown = sorted(set(args.variants) - set(variants))
        if unknown:
            ap.error(f"unknown --variants {unknown}; known {list(variants)}")
        variants = {v: variants[v] for v in args.variants}
    rows = []
    for name in args.pseudo:
        tgt = names.index(name)
        for seed in args.seeds:
            sp = prepare_split(data, tgt, cfg, seed)
            k, s = data.num_classes, len(sp.source_ids)
            pre = pretrain_tst(sp.sources, cfg)
            xs, ys, _ = sp.sources.tensors()
            ds = torch.from_numpy(_local_domains(sp.sources, sp.source_ids))
            xq, yq, _ = sp.shots.tensors()
            xt, yt, _ = sp.test.tensors()
            r: dict = {"pseudo_target": name, "seed": seed}
            r["source_only"] = macro_f1(predict(pre.method("full_finetune"), xt), yt, k)
            torch.manual_seed(seed)
            model = pre.pond(cfg.pond(k, s)).set_phase("sources")
            fit = dict(seed=seed, num_classes=k, step_fn=pond_step)
            _trainer(cfg, epochs=cfg.prompt_epochs, lr=cfg.prompt_lr, **fit).fit(
                model, TensorDataset(xs, ys, ds)
            )
            probs = [predict(model, xt, lambda m, xb, i=i: m(xb, i)).softmax(-1) for i in range(s)]
            single = [macro_f1(p.log(), yt, k) for p in probs]
            r.update(single_mean=float(np.mean(single)), single_oracle=max(single))
            r["mixture_of_source_prompts"] = macro_f1(torch.stack(probs).mean(0).log(), yt, k)
            rng = np.random.default_rng(seed)
            rep = np.concatenate(
                [rng.choice(np.flatnonzero(ds.numpy() == i), cfg.replay_per_source, replace=False)
                 for i in range(s)]
            )  # fmt: skip
            tid = torch.full((len(xq),), model.target_id)
            model.set_phase("target")
            _trainer(cfg, epochs=cfg.target_epochs, lr=cfg.prompt_lr, **fit).fit(
                model,
                TensorDataset(
                    torch.cat([xq, xs[rep]]), torch.cat([yq, ys[rep]]), torch.cat([tid, ds[rep]])
                ),
            )
            r["target_prompt_step2b"] = macro_f1(predict(model, xt), yt, k)
            oracle = int(np.argmax(single))
            by_kind = {}
            for kind in ("prompt_cosine", "class_centroid"):  # the two similarity criteria
                alt = select_source(model, xq, yq, criterion=cfg.criterion, similarity=kind,
                                    sources=(xs, ys, ds))  # fmt: skip
                by_kind[kind] = alt
                r[f"{kind}: selected"] = single[alt.chosen]
                r[f"{kind}: agrees_with_oracle"] = int(alt.chosen == oracle)
                r[f"{kind}: spearman_sim"] = float(spearmanr(alt.similarity, single)[0])
                r[f"{kind}: spearman_both"] = float(spearmanr(alt.score, single)[0])
            sel = by_kind[cfg.similarity.value]  # the pipeline's choice
            r["single_selected"] = single[sel.chosen]
            r["selection_agrees_with_oracle"] = int(sel.chosen == oracle)
            r["spearman_fid"] = float(spearmanr(sel.fidelity, single)[0])
            for vname, (init, replay, head) in variants.items():
                vcfg = dataclasses.replace(
                    cfg, adapt_init=init, adapt_replay=replay, adapt_train_head=head
                )
                m = adapt_target(
                    copy.deepcopy(model), vcfg, sp, seed, sel.chosen, (xq, yq), (xs, ys, ds)
                )
                r[f"step3 {vname}"] = macro_f1(predict(m, xt), yt, k)
            rows.append(r)
            print(json.dumps({a: round(b, 4) if isinstance(b, float) else b for a, b in r.items()}))
            sys.stdout.flush()
    keys = [a for a in rows[0] if a not in ("pseudo_target", "seed")]
    print(json.dumps({"mean": {a: round(float(np.mean([x[a] for x in rows])), 4) for a in keys}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

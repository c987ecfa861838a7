"""polyprompt.graph — RELIEF: graph feature prompts placed by a reinforcement-learning agent.

Zhu et al., "RELIEF: Reinforcement Learning Empowered Graph Feature Prompt Tuning"
(KDD 2025; official code JasonZhujp/RELIEF). A frozen pre-trained GIN (the pretrain-gnns
layout, on the atom/bond features of :func:`torch_geometric.utils.from_smiles`), sparse
per-node feature prompts chosen by an H-PPO agent, a projection head trained in turn.

Light module: torch_geometric, stable-baselines3, gymnasium and rdkit are imported only by
the submodules that need them.

Example::

    >>> from polyprompt.graph import GINConfig
    >>> GINConfig(num_layers=2, emb_dim=32).emb_dim
    32
"""

from polyprompt.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "GINConfig": "config",
    "RELIEFConfig": "config",
    "HPPOConfig": "config",
    "GraphClassifierConfig": "config",
    "PretrainGraphConfig": "config",
    "GINBackbone": "backbone",
    "load_pretrain_gnns_checkpoint": "backbone",
    "MoleculeData": "data",
    "smiles_to_graphs": "data",
    "load_solubility": "data",
    "load_freesolv": "data",
    "load_nci_unlabelled": "data",
    "load_moleculenet_csv": "data",
    "scaffold_split": "data",
    "few_shot": "data",
    "check_graph": "data",
    "GraphLinearProbe": "methods",
    "GraphFullFineTune": "methods",
    "GraphGPF": "methods",
    "GraphGPFPlus": "methods",
    "GraphAllInOne": "methods",
    "AllInOneConfig": "config",
    "train_graph_method": "methods",
    "evaluate_graph_method": "methods",
    "pretrain_gin": "pretrain",
    "GraphPromptEnv": "env",
    "make_vec_env": "env",
    "vec_rollout": "env",
    "HPPOAgent": "agent",
    "RELIEF": "relief",
    "NodeGraph": "node_tasks",
    "NodeSubgraphs": "node_tasks",
    "node_subgraphs": "node_tasks",
    "few_shot_node_split": "node_tasks",
    "load_karate": "node_tasks",
    "load_planetoid_raw": "node_tasks",
    "pretrain_node_gin": "node_tasks",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), ("__version__",))

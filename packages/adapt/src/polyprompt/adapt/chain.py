"""Chain-of-Domain: the target-data schedule of CoDA (Gong et al. AAAI 2024, Sec. 3.1).

The model first adapts on *easy* target scenes, then on *hard* ones, cycling easy -> hard
until iteration ``cycle_until`` (paper: 12k of the MIC schedule), then on all target scenes
together. :class:`ChainOfDomainSchedule` maps an iteration to its :class:`ChainPhase`;
:meth:`ChainOfDomainSchedule.pick` selects from per-phase batches. It knows nothing about
segmentation: any curriculum over two groups can use it.

``period`` (iterations of one easy + hard cycle) is not given in the paper; the default
splits the chain part into ``num_cycles`` equal cycles (our choice, documented).

Example::

    >>> s = ChainOfDomainSchedule(cycle_until=8, period=4)
    >>> [s.phase(t).value for t in range(10)]
    ['easy', 'easy', 'hard', 'hard', 'easy', 'easy', 'hard', 'hard', 'all', 'all']
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from polyprompt.core.config import PromptConfig


class ChainPhase(str, Enum):
    EASY = "easy"
    HARD = "hard"
    ALL = "all"


@dataclass
class ChainOfDomainSchedule(PromptConfig):
    """Easy -> hard cycles before ``cycle_until``, then all together."""

    cycle_until: int = 12000
    period: int = 2000
    easy_first: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(
            isinstance(self.cycle_until, int) and self.cycle_until >= 0, "cycle_until", ">= 0"
        )
        self.require(isinstance(self.period, int) and self.period >= 2, "period", "must be >= 2")

    @classmethod
    def for_run(
        cls, iterations: int, cycle_fraction: float = 0.3, num_cycles: int = 2
    ) -> ChainOfDomainSchedule:
        """Scale the paper's schedule (12k of 40k iterations) to a run of ``iterations``,
        with ``num_cycles`` easy -> hard cycles in the chain part."""
        until = round(iterations * cycle_fraction)
        period = max(2, until // max(1, num_cycles))
        return cls(cycle_until=until, period=period)

    def phase(self, iteration: int) -> ChainPhase:
        if iteration >= self.cycle_until:
            return ChainPhase.ALL
        first = (iteration % self.period) < (self.period + 1) // 2
        if not self.easy_first:
            first = not first
        return ChainPhase.EASY if first else ChainPhase.HARD

    def pick(self, iteration: int, easy: Any, hard: Any, all_: Any) -> Any:
        """The batch of the phase of ``iteration``."""
        return {ChainPhase.EASY: easy, ChainPhase.HARD: hard, ChainPhase.ALL: all_}[
            self.phase(iteration)
        ]

    def counts(self, iterations: int) -> dict[str, int]:
        """How many of the first ``iterations`` iterations fall in each phase."""
        out = {p.value: 0 for p in ChainPhase}
        for t in range(iterations):
            out[self.phase(t).value] += 1
        return out

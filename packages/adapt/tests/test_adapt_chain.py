import pytest

from polyprompt.adapt.chain import ChainOfDomainSchedule, ChainPhase
from polyprompt.core.errors import ConfigError


def test_easy_then_hard_cycles_then_all():
    s = ChainOfDomainSchedule(cycle_until=12000, period=2000)
    assert s.phase(0) is ChainPhase.EASY and s.phase(999) is ChainPhase.EASY
    assert s.phase(1000) is ChainPhase.HARD and s.phase(1999) is ChainPhase.HARD
    assert s.phase(2000) is ChainPhase.EASY
    assert s.phase(11999) is ChainPhase.HARD
    assert s.phase(12000) is ChainPhase.ALL and s.phase(40000) is ChainPhase.ALL
    assert s.counts(16000) == {"easy": 6000, "hard": 6000, "all": 4000}


def test_scaled_schedule_and_pick():
    s = ChainOfDomainSchedule.for_run(100)
    assert s.cycle_until == 30 and s.period == 15
    assert s.pick(0, "e", "h", "a") == "e" and s.pick(8, "e", "h", "a") == "h"
    assert ChainOfDomainSchedule(9, 3).counts(9) == {"easy": 6, "hard": 3, "all": 0}
    assert s.pick(30, "e", "h", "a") == "a"
    assert ChainOfDomainSchedule(8, 4, easy_first=False).phase(0) is ChainPhase.HARD
    with pytest.raises(ConfigError, match="period"):
        ChainOfDomainSchedule(10, 1)

import pytest

from polyprompt.code.pairs import (
    PairExample,
    build_pairs,
    check_pairs,
    name_subtokens,
    split_functions,
)
from polyprompt.core.errors import ConfigError, InputError


def test_pairs_balanced_reproducible_and_hard(python_corpus):
    fns = python_corpus.functions
    for task in ("clone", "search", "name"):
        pairs = build_pairs(fns, task, num_pairs=40, seed=3)
        assert [p.label for p in pairs] == [1, 0] * 20
        assert pairs == build_pairs(fns, task, num_pairs=40, seed=3)
        assert pairs != build_pairs(fns, task, num_pairs=40, seed=4)
        assert all(p.task == task and p.language == "python" for p in pairs)
    # hard negatives: most negative partners come from the anchor's own file
    neg = [p for p in build_pairs(fns, "clone", seed=0) if p.label == 0]
    same_file = sum(
        p.uid.split("|")[0].split(":")[1] == p.uid.split("|")[1].split(":")[1] for p in neg
    )
    assert same_file / len(neg) > 0.5


def test_task_layouts(python_corpus):
    by_uid = {f.uid: f for f in python_corpus.functions}
    clone = build_pairs(python_corpus.functions, "clone", num_pairs=10)
    pos = clone[0]
    fn = by_uid[pos.uid.split("|")[0]]
    assert pos.text_a == fn.code and pos.text_b == fn.normalized()
    name = build_pairs(python_corpus.functions, "name", num_pairs=10)
    fn = by_uid[name[0].uid.split("|")[0]]
    assert name[0].text_a == fn.name and fn.name not in name[0].text_b.split()
    search = build_pairs(python_corpus.functions, "search", num_pairs=10)
    fn = by_uid[search[0].uid.split("|")[0]]
    assert search[0].text_a == fn.query and search[0].text_b == fn.code


def test_split_by_file(python_corpus):
    a, b = split_functions(python_corpus.functions, 0.5, seed=0)
    assert a and b and not {f.path for f in a} & {f.path for f in b}
    with pytest.raises(ConfigError):
        split_functions(python_corpus.functions, 1.5)


def test_name_subtokens():
    assert name_subtokens("readFileHTTP_v2") == ["read", "file", "http", "v2"]


def test_bad_pairs():
    with pytest.raises(InputError, match=r"pairs\[0\]: pair is missing field\(s\) \['text_b'\]"):
        check_pairs([{"text_a": "x", "label": 1}])
    with pytest.raises(InputError, match=r"pairs\[1\].label: must be 0 or 1"):
        check_pairs(
            [PairExample("clone", "py", "a", "b", 1), PairExample("clone", "py", "a", "b", 2)]
        )
    with pytest.raises(InputError, match=r"text_a: must be a non-empty string"):
        check_pairs([{"text_a": " ", "text_b": "b", "label": 0}])
    with pytest.raises(InputError, match="no pairs"):
        check_pairs([])
    with pytest.raises(ConfigError, match="unknown task"):
        build_pairs([], "translate")
    with pytest.raises(InputError, match="at least 2 eligible"):
        build_pairs([], "clone")

import gzip
import json

import pytest

from polyprompt.code.formats import (
    load_bigclonebench,
    load_codesearchnet,
    load_codesearchnet_functions,
    load_pair_dir,
    load_zecoler_jsonl,
)
from polyprompt.core.errors import InputError


def _bcb(d):
    funcs = [
        {"func": "public int a(int x) {\n  return x + 1;\n}", "idx": "10"},
        {"func": "public int b(int y) { return y + 1; }", "idx": "11"},
        {"func": "void c() { System.out.println(1); }", "idx": "12"},
    ]
    (d / "data.jsonl").write_text("\n".join(json.dumps(f) for f in funcs) + "\n")
    (d / "train.txt").write_text("10\t11\t1\n10\t12\t0\n")
    (d / "test.txt").write_text("11\t12\t0\n")


def test_bigclonebench_layout(tmp_path):
    _bcb(tmp_path)
    pairs = load_bigclonebench(tmp_path, "train")
    assert [p.label for p in pairs] == [1, 0]
    assert pairs[0].text_a == "public int a(int x) { return x + 1; }"  # whitespace normalised
    assert load_pair_dir(tmp_path, "test")[0].uid == "11|12"
    (tmp_path / "valid.txt").write_text("10\t99\t1\n")
    with pytest.raises(InputError, match=r"valid.txt:1: idx '99' is not in data.jsonl"):
        load_bigclonebench(tmp_path, "valid")
    (tmp_path / "dev.txt").write_text("10 11\n")
    with pytest.raises(InputError, match=r"dev.txt:1: expected 'idx1<TAB>idx2<TAB>label'"):
        load_bigclonebench(tmp_path, "dev")


def test_zecoler_jsonl(tmp_path):
    rows = [
        {
            "code1": "int f() { return 1; }",
            "code2": "int g() { return 1; }",
            "idx": 0,
            "label": True,
        },
        {"code1": "int f() { return 1; }", "code2": "void h() {}", "idx": 1, "label": "false"},
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert [p.label for p in load_pair_dir(tmp_path, "train")] == [1, 0]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"code1": "x", "label": 1}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: missing field\(s\) \['code2'\]"):
        load_zecoler_jsonl(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text('{"code1": "x", "code2": "y", "label": 3}\n')
    with pytest.raises(InputError, match="label must be 0/1/true/false"):
        load_zecoler_jsonl(tmp_path / "bad2.jsonl")
    with pytest.raises(InputError, match="has neither"):
        load_pair_dir(tmp_path, "test")


def _csn_line(lang, name, code, doc):
    return json.dumps(
        {
            "repo": "r",
            "path": "p",
            "func_name": name,
            "language": lang,
            "code": code,
            "docstring": doc,
            "code_tokens": [],
            "docstring_tokens": [],
        }
    )


def test_codesearchnet_jsonl_gz(tmp_path):
    lines = [
        _csn_line(
            "python",
            "add",
            'def add(a, b):\n    """Add two numbers."""\n    return a + b\n',
            "Add two numbers.",
        ),
        _csn_line("python", "sub", "def sub(a, b):\n    return a - b\n", "Subtract b from a."),
        _csn_line(
            "go",
            "Max",
            "func Max(a, b int) int {\n\tif a > b {\n\t\treturn a\n\t}\n\treturn b\n}",
            "Max returns the larger value.",
        ),
        _csn_line("java", "len", "public int len(String s) { return s.length(); }", "Length of s."),
        _csn_line("python", "broken", "def broken(:\n  pass", "Broken."),
    ]
    path = tmp_path / "python_train_0.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    fns, stats = load_codesearchnet_functions(path)
    assert [f.name for f in fns] == ["add", "sub", "Max", "len"] and stats.skipped_error == 1
    assert fns[0].query == "Add two numbers." and "Add" not in fns[0].code
    pairs = load_codesearchnet(path, "search", seed=0)
    assert {p.label for p in pairs} == {0, 1}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"code": "x", "language": "python"}) + "\n")
    with pytest.raises(
        InputError, match=r"bad.jsonl:1: missing CodeSearchNet field\(s\) \['func_name'\]"
    ):
        load_codesearchnet_functions(bad)
    bad.write_text("not json\n")
    with pytest.raises(InputError, match="bad.jsonl:1: not a JSON object"):
        load_codesearchnet_functions(bad)

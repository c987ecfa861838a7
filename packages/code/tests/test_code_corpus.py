import pytest

from polyprompt.code.corpus import available_languages, load_corpus
from polyprompt.core.errors import ConfigError, InputError


def test_python_stdlib_corpus_is_real_and_reproducible(python_corpus):
    fns = python_corpus.functions
    assert len(fns) == 300 and all(f.language == "python" for f in fns)
    assert sum(f.query is not None for f in fns) > 50  # real docstrings
    again = load_corpus("python", max_functions=300, seed=0)
    assert again.fingerprint() == python_corpus.fingerprint()


def test_pretrain_and_task_halves_share_no_file():
    a = load_corpus("python", split="pretrain", max_functions=200)
    b = load_corpus("python", split="task", max_functions=200)
    assert not {f.path for f in a.functions} & {f.path for f in b.functions}


@pytest.mark.parametrize("lang", ["go", "java"])
def test_other_languages_when_installed(lang):
    if lang not in available_languages():
        pytest.skip(f"no offline {lang} source here")
    c = load_corpus(lang, max_functions=40)
    assert len(c.functions) == 40 and c.functions[0].language == lang


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="split"):
        load_corpus("python", split="dev")
    with pytest.raises(ConfigError, match="unsupported language"):
        load_corpus("fortran")
    (tmp_path / "empty.py").write_text("")
    (tmp_path / "latin.py").write_bytes(b"def f():\n    return '\xe9'\n")
    (tmp_path / "good.py").write_text("def good(a, b):\n    return a + b * a - b\n")
    c = load_corpus("python", root=str(tmp_path), split="all", min_tokens=1)
    assert [f.name for f in c.functions] == ["good"]
    assert c.stats.empty_files == 1 and c.stats.undecodable_files == 1
    with pytest.raises(InputError, match="no python source"):
        load_corpus("python", root=str(tmp_path / "missing"))

import pytest

from polyprompt.code.extract import extract_functions
from polyprompt.core.errors import ConfigError, InputError

PY = '''
def read_config(path, strict=False):
    """Read the configuration file at path.

    More text.
    """
    data = open(path).read()  # a comment
    return read_config(data) if strict else data
'''
GO = """package demo

// ParseLine splits a line into fields.
// It ignores comments.
func ParseLine(line string) []string {
	fields := strings.Fields(line)
	return fields
}
"""
JAVA = """class Box {
    /**
     * Returns the width of the box.
     * @return the width
     */
    public int getWidth() { return this.width * scale; }
}
"""
JS = """// Add two numbers.
function addTwo(a, b) { return a + b; }
class K { /** Size of k. */ size() { return this.n; } }
"""


def test_python_function_docstring_and_tokens():
    res = extract_functions(PY, "python", path="cfg.py")
    (fn,) = res.functions
    assert fn.name == "read_config" and fn.line == 2 and fn.path == "cfg.py"
    assert fn.query == "Read the configuration file at path."
    assert (
        "comment" not in fn.code and "configuration" not in fn.code
    )  # comment + docstring dropped
    assert fn.tokens[:3] == ("def", "read_config", "(")
    assert fn.masked_body().count("read_config") == 0 and fn.masked_body().count(" f ") == 2
    norm = fn.normalized()
    assert "path" not in norm.split() and "v0" in norm and norm.count("v0") == 2  # name + recursion


@pytest.mark.parametrize(
    ("src", "lang", "name", "query"),
    [
        (GO, "go", "ParseLine", "ParseLine splits a line into fields."),
        (JAVA, "java", "getWidth", "Returns the width of the box."),
        (JS, "javascript", "addTwo", "Add two numbers."),
    ],
)
def test_leading_comment_languages(src, lang, name, query):
    fns = extract_functions(src, lang).functions
    fn = next(f for f in fns if f.name == name)
    assert fn.query == query
    assert "//" not in fn.code and "/**" not in fn.code
    assert fn.identifier_positions


def test_js_method_definition_found():
    names = {f.name for f in extract_functions(JS, "js").functions}
    assert names == {"addTwo", "size"}


def test_error_nodes_skipped_and_counted_or_rejected():
    src = "def ok(x):\n    return x\n\ndef broken(:\n    return )\n"
    res = extract_functions(src, "python")
    assert [f.name for f in res.functions] == ["ok"]
    assert res.stats.skipped_error >= 1
    with pytest.raises(InputError, match=r"bad\.py:\d+: function does not parse"):
        extract_functions(src, "python", path="bad.py", on_error="raise")


def test_bad_inputs():
    with pytest.raises(InputError, match="empty source"):
        extract_functions("  \n", "python", path="e.py")
    with pytest.raises(InputError, match=r"x\.py: source is not valid UTF-8 .*offset 9"):
        extract_functions(b"def f(): \xff\xfe", "python", path="x.py")
    with pytest.raises(ConfigError, match="unsupported language 'cobol'"):
        extract_functions("x", "cobol")
    with pytest.raises(ConfigError, match="on_error"):
        extract_functions(PY, "python", on_error="ignore")
    with pytest.raises(InputError, match="str or bytes"):
        extract_functions(123, "python")


def test_size_filters_count():
    res = extract_functions(PY, "python", min_tokens=1000)
    assert res.functions == [] and res.stats.skipped_size == 1

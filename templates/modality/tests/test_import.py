import importlib


def test_imports_and_registers():
    mod = importlib.import_module("polyprompt.__NAME__.method")
    from polyprompt.core import get_method

    assert get_method("__NAME___method") is mod.__CLASS__

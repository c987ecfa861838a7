import os

from polyprompt.core.io import atomic_write_text


def test_atomic_write_gives_the_mode_a_plain_write_would(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert atomic.read_text() == "x"
    assert os.stat(atomic).st_mode & 0o777 == os.stat(plain).st_mode & 0o777

"""files.atomic_write: the new content or the old one, never a mix, and no temporary file left behind."""
import json

import pytest

from maskrcnn.files import atomic_write, atomic_write_json, atomic_write_text


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": [1, 2]})
    assert json.loads(path.read_text()) == {"x": [1, 2]}
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")

    def half_then_fail(file):
        file.write(b"half of the new")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_failing_check_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")

    def refuse(tmp):
        assert tmp.read_bytes() == b"new" and tmp.parent == tmp_path
        raise ValueError("does not read back")

    with pytest.raises(ValueError):
        atomic_write(path, lambda file: file.write(b"new"), check=refuse)
    assert path.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1

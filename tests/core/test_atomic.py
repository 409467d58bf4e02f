"""Atomic writes: a failure mid-write leaves the previous artifact (or none), never a part."""

import pytest

from pipeline.core.atomic import atomic_dir, atomic_path, write_json


class Boom(Exception):
    pass


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.9})
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text('{"accuracy": 0.')  # half written
            raise Boom
    assert target.read_text() == '{\n  "accuracy": 0.9\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_failed_write_of_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "model.keras", suffix=".keras") as tmp:
            assert tmp.suffix == ".keras" and tmp.parent == tmp_path
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_folder_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "raw"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(Boom):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise Boom
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]

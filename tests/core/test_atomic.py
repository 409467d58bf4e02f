"""Atomic writes: a failure mid-write leaves the previous artifact (or none), never a part."""

import pytest

from pipeline.core.atomic import all_or_nothing, atomic_dir, atomic_path, write_json, write_text
from pipeline.core.errors import PipelineError
from tests.conftest import fill_disk


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


def test_writes_in_a_group_land_together_or_not_at_all(tmp_path):
    write_text(tmp_path / "a.csv", "old a")
    write_text(tmp_path / "b.csv", "old b")
    with pytest.raises(Boom):
        with all_or_nothing():
            write_text(tmp_path / "a.csv", "new a")
            with atomic_dir(tmp_path / "live") as tmp:
                (tmp / "metrics.json").write_text("{}")
            assert (tmp_path / "a.csv").read_text() == "old a"  # held back
            write_text(tmp_path / "b.csv", "new b")
            raise Boom
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.csv": "old a",
                                                                   "b.csv": "old b"}
    with all_or_nothing():
        write_text(tmp_path / "a.csv", "new a")
        with atomic_dir(tmp_path / "live") as tmp:
            (tmp / "metrics.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv", "live"]
    assert (tmp_path / "a.csv").read_text() == "new a"


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(small_disk):
    target = small_disk / "metrics.json"
    write_json(target, {"accuracy": 0.9})
    fill_disk(small_disk)
    with pytest.raises(PipelineError) as error:
        write_text(target, "x" * 100_000)
    assert str(error.value) == (f"{target}: cannot be written: No space left on device; the "
                                "previous outputs are kept: free some space and rerun")
    with pytest.raises(PipelineError, match=f"^{small_disk / 'live'}: cannot be written: No "
                                            "space left on device;"):
        with atomic_dir(small_disk / "live") as tmp:
            (tmp / "curve.tsv").write_bytes(bytes(100_000))
    assert target.read_text() == '{\n  "accuracy": 0.9\n}\n'
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "metrics.json"]

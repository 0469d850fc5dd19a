"""The run key: what makes two pipeline runs the same computation."""

from drcl.config import parse_params
from drcl.kfp.tracking import resolve_run, sources_digest


def test_an_edited_source_is_other_code(tmp_path):
    (tmp_path / "lib" / "sub").mkdir(parents=True)
    (tmp_path / "lib" / "a.py").write_text("x = 1\n")
    (tmp_path / "lib" / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "lib" / "notes.txt").write_text("not code\n")
    first = sources_digest([tmp_path / "lib"])
    (tmp_path / "lib" / "notes.txt").write_text("still not code\n")
    assert sources_digest([tmp_path / "lib"]) == first
    (tmp_path / "lib" / "sub" / "b.py").write_text("y = 3\n")
    assert sources_digest([tmp_path / "lib"]) != first
    (tmp_path / "lib" / "sub" / "b.py").write_text("y = 2\n")
    assert sources_digest([tmp_path / "lib"]) == first
    (tmp_path / "lib" / "sub" / "b.py").rename(tmp_path / "lib" / "b.py")
    assert sources_digest([tmp_path / "lib"]) != first  # a moved file is other code


def test_precision_changes_the_key_and_the_device_does_not():
    base = {"tracking": {"enabled": False}}
    key = resolve_run(parse_params(base)).key
    assert resolve_run(parse_params(base | {"precision": "bf16"})).key != key
    assert resolve_run(parse_params(base | {"device": "cpu"})).key == key
    assert resolve_run(parse_params(base)).key == key

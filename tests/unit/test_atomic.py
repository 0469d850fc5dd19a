"""Outputs appear whole or not at all."""

import pytest

from drcl.atomic import atomic_path, write_json


def test_file_replaced_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_directory_replaced_whole(tmp_path):
    target = tmp_path / "dir"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("2")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]


def test_a_folder_is_exchanged_never_missing(tmp_path):
    from drcl.atomic import exchange

    old, new = tmp_path / "plots", tmp_path / "new"
    for folder, name in ((old, "a"), (new, "b")):
        folder.mkdir()
        (folder / name).write_text(name)
    assert exchange(new, old)  # this machine's file system has RENAME_EXCHANGE
    assert [p.name for p in old.iterdir()] == ["b"] and [p.name for p in new.iterdir()] == ["a"]


def _landing(root, crash_at: int, *, after: bool) -> None:
    """In a child: land a step's four outputs (one a folder), dying (os._exit, no clean-up)
    just before, or just after, the `crash_at`-th move."""
    import os

    import drcl.atomic as atomic

    real = atomic._replace
    moves = [0]

    def dying(new, target):
        moves[0] += 1
        if moves[0] == crash_at and not after:
            os._exit(9)
        real(new, target)
        if moves[0] == crash_at and after:
            os._exit(9)

    atomic._replace = dying
    with atomic.output_set(root) as out:
        for name in ("metrics.json", "curve.csv", "weights.bin"):
            out.path(root / name).write_text("new")
        folder = out.path(root / "plots")
        folder.mkdir()
        (folder / "new.csv").write_text("new")
    os._exit(0)


def _outputs(root, *, hidden: bool = False) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and (hidden or not any(part.startswith(".")
                                                  for part in p.relative_to(root).parts))}


OLD = {"curve.csv": "old", "metrics.json": "old", "plots/old.csv": "old", "weights.bin": "old"}
NEW = {"curve.csv": "new", "metrics.json": "new", "plots/new.csv": "new", "weights.bin": "new"}


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("crash_at", [1, 2, 3, 4, 5])
def test_a_set_killed_while_landing_is_finished_by_recover(tmp_path, crash_at, after):
    """Move 1 writes the journal; moves 2 to 5 land the outputs."""
    import multiprocessing

    from drcl.atomic import JOURNAL, recover

    for name, text in OLD.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    child = multiprocessing.get_context("fork").Process(target=_landing,
                                                        args=(tmp_path, crash_at),
                                                        kwargs={"after": after})
    child.start()
    child.join()
    assert child.exitcode == 9
    if crash_at == 1 and not after:  # died before the journal: nothing was promised or moved
        assert not recover(tmp_path) and _outputs(tmp_path) == OLD
        return
    assert (tmp_path / JOURNAL).is_file()  # the set was promised before anything moved
    assert recover(tmp_path)
    # all new: no old file beside a new one, and nothing of the landing left behind
    assert _outputs(tmp_path, hidden=True) == NEW
    assert not recover(tmp_path)


def test_a_failed_step_lands_nothing(tmp_path):
    from drcl.atomic import output_set

    for name, text in OLD.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(RuntimeError), output_set(tmp_path) as out:
        out.path(tmp_path / "metrics.json").write_text("new")
        raise RuntimeError("training diverged")
    assert _outputs(tmp_path) == OLD

"""Tests for iein.utils: atomic writes, seeding, hashing, resource numbers."""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from iein import utils
from iein.utils import peak_rss_mb, set_seed, sha256_file, torch_threads
from iein.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def _leftovers(directory: Path, keep: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


def test_atomic_writes_round_trip(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "t.txt", "héllo\nworld\n")
    atomic_write_json(tmp_path / "j.json", {"f1": np.float32(0.5), "ids": np.arange(2)})
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\nworld\n"
    assert json.loads((tmp_path / "j.json").read_text()) == {"f1": 0.5, "ids": [0, 1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "j.json", "t.txt"]


def test_atomic_write_replaces_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "r.txt"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640


def test_new_file_gets_umask_mode_not_mkstemp_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "n.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "n.txt").stat().st_mode & 0o777 == 0o644


def test_atomic_write_failure_midway_keeps_old_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "results.json"
    target.write_text('{"old": true}')

    # Fail after the data was written to the temp file but before it was renamed.
    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(utils.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"new": True})
    assert target.read_text() == '{"old": true}'
    assert _leftovers(tmp_path, "results.json") == []  # temp file cleaned up


def test_atomic_write_json_unserialisable_touches_nothing(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan")})
    assert target.read_text() == "old"
    assert _leftovers(tmp_path, "r.json") == []


def test_atomic_path_success_with_torch_save(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        assert tmp.name.endswith(".pt")  # suffix kept for writers that insist on one
        torch.save({"w": torch.ones(2)}, tmp)
        assert not target.exists()  # invisible until the block succeeds
    assert torch.equal(torch.load(target)["w"], torch.ones(2))
    assert _leftovers(tmp_path, "model.pt") == []


def test_atomic_path_failure_midway_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    target.write_bytes(b"old checkpoint")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"half a new checkp")  # partial write, then the writer dies
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old checkpoint"
    assert _leftovers(tmp_path, "model.pt") == []


def test_set_seed_makes_torch_numpy_random_repeatable() -> None:
    set_seed(123)
    a = (torch.randn(5), np.random.rand(3), random.random())
    set_seed(123)
    b = (torch.randn(5), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    assert a[2] == b[2]
    set_seed(124)
    assert not torch.equal(torch.randn(5), a[0])
    assert torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, True])
def test_set_seed_rejects_bad_seeds(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        set_seed(bad)  # type: ignore[arg-type]


def test_torch_threads_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(KeyError):
        with torch_threads(1):
            raise KeyError("x")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        with torch_threads(0):
            pass


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(3000)
    (tmp_path / "d").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "d") == expected
    assert sha256_file(tmp_path / "d", chunk=7) == expected  # chunking does not matter
    (tmp_path / "e").write_bytes(b"")
    assert sha256_file(tmp_path / "e") == hashlib.sha256(b"").hexdigest()


def test_peak_rss_mb_is_plausible() -> None:
    # This process has imported torch, so it holds tens of MiB at least and far under 1 TiB.
    assert 10 < peak_rss_mb() < 1_000_000


def test_atomic_write_creates_missing_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "result.json"
    atomic_write_json(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}

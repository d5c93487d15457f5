"""Temporaries of killed writers (issue 12, part 5): ``kill -9`` during an atomic save must
not strand files forever.  :func:`iein.atomic.atomic_path` names its temporary
``.NAME.iein-tmp-PID-RANDOM.SUFFIX``; the next atomic write of NAME removes those whose
writer is dead, and nothing else."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from iein import atomic
from iein.atomic import atomic_path, atomic_write_bytes, remove_stale_temporaries

TMP_NAME = re.compile(r"\.(?P<name>.+)\.iein-tmp-(?P<pid>\d+)-[a-z0-9_]{8}(?P<suffix>.*)")
OLD = time.time() - 3600  # an mtime well past atomic.STALE_AFTER_S


def _dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temp(directory: Path, target: str, pid: int, rand: str = "abcd1234", mtime: float = OLD) -> Path:
    path = directory / f".{target}.iein-tmp-{pid}-{rand}{Path(target).suffix}"
    path.write_bytes(b"half a checkpoint")
    os.utime(path, (mtime, mtime))
    return path


def test_temporary_name_carries_pid_and_suffix(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "best.safetensors") as tmp:
        m = TMP_NAME.fullmatch(tmp.name)
        assert m is not None, tmp.name
        assert (m["name"], int(m["pid"]), m["suffix"]) == ("best.safetensors", os.getpid(), ".safetensors")
        tmp.write_bytes(b"x")


def test_next_save_removes_dead_writers_temporaries_only(tmp_path: Path) -> None:
    target = tmp_path / "best.safetensors"
    target.write_bytes(b"old")
    dead = _dead_pid()
    stale = _temp(tmp_path, target.name, dead)
    kept = [
        _temp(tmp_path, target.name, os.getpid(), "live0000"),  # a live writer's (this process)
        _temp(tmp_path, target.name, os.getppid(), "live1111"),  # a live writer's (another process)
        _temp(tmp_path, target.name, dead, "young000", mtime=time.time()),  # dead, but just written
        _temp(tmp_path, "other.safetensors", dead),  # another target's: its own next save
    ]
    foreign = [tmp_path / ".tmpAb12Cd", tmp_path / f".best.safetensors.{dead}.tmp.safetensors",
               tmp_path / f".best.safetensors.iein-tmp-{dead}-abcd1234.pt",  # suffix does not match
               tmp_path / "notes.txt"]
    for path in foreign:
        path.write_bytes(b"not ours")
        os.utime(path, (OLD, OLD))
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert not stale.exists()
    assert all(p.exists() for p in kept + foreign)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [target, *kept, *foreign])


def test_start_up_sweep_of_a_whole_folder(tmp_path: Path) -> None:
    dead = _dead_pid()
    a = _temp(tmp_path, "a.json", dead)
    b = _temp(tmp_path, "model.pt", dead)
    live = _temp(tmp_path, "model.pt", os.getpid(), "live0000")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([a, b])
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_zombie_writer_counts_as_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert atomic.pid_alive(proc.pid)
        proc.kill()
        deadline = time.time() + 10
        while atomic.pid_alive(proc.pid) and time.time() < deadline:  # a zombie until reaped
            time.sleep(0.02)
        assert not atomic.pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()


CHILD = textwrap.dedent("""
    import sys, time
    from iein.atomic import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        with open(tmp, "wb") as fh:
            for i in range(10_000):
                fh.write(b"x" * 65536)
                fh.flush()
                if i == 3:
                    print(tmp, flush=True)
                time.sleep(0.01)
""")


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_kill_9_mid_write_then_next_save_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "resume.pt"
    torch.save({"epoch": 1}, target)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        leftover = Path(proc.stdout.readline().strip())  # type: ignore[union-attr]
        assert TMP_NAME.fullmatch(leftover.name) and leftover.stat().st_size > 0
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert leftover.exists()  # what a kill -9 leaves: the partial temporary, target untouched
    assert torch.load(target) == {"epoch": 1}
    monkeypatch.setattr(atomic, "STALE_AFTER_S", 0.0)  # do not wait out the grace period
    with atomic_path(target) as tmp:
        torch.save({"epoch": 2}, tmp)
    assert not leftover.exists()
    assert torch.load(target) == {"epoch": 2}
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_checkpoint_save_makes_no_temporary_of_its_own(tmp_path: Path) -> None:
    """``safetensors.torch.save_file`` writes a ``.tmpXXXXXX`` of its own next to the target
    (safetensors >= 0.6), which a kill strands; every file a checkpoint save creates must be
    the target or atomic_path's temporary."""
    from iein.checkpoint import load_checkpoint, save_checkpoint
    from iein.encoders.glove import WordFeaturizer
    from iein.encoders.glove_bigru import GloveBiGRU, GloveBiGRUConfig
    from iein.models.iein import IEIN, IEINConfig
    from iein.text.vocab import Vocab

    vocab = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(100_000)])
    enc = GloveBiGRU(GloveBiGRUConfig(vocab_size=len(vocab), embedding_dim=100, hidden=4), WordFeaturizer(vocab))
    model = IEIN(IEINConfig(n_labels=2, emotion_dim=4), enc)  # ~40 MB: the write takes a while
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(os.listdir(tmp_path))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        save_checkpoint(tmp_path / "m.safetensors", model, ("x", "y"))
    finally:
        done.set()
        watcher.join()
    strays = [n for n in seen if n != "m.safetensors" and not TMP_NAME.fullmatch(n)]
    assert strays == []
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.labels == ("x", "y")
    assert torch.equal(loaded.model.state_dict()["utterance_encoder.embedding.weight"],
                       model.state_dict()["utterance_encoder.embedding.weight"])

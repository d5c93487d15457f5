"""Worker lifetime and the one-driver-per-folder lock of ``iein reproduce`` (issue 12, part 5):
after ``kill -9`` of the driver no worker (nor the multiprocessing resource tracker) may
live on, and a second driver on the same folder is refused while the first is alive."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from iein.errors import ConfigError
from iein.reproduce.runner import driver_lock, reproduce

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; SIGKILL")


def _state(pid: int) -> str | None:
    """The process state letter from /proc (None once the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def _running(pid: int) -> bool:
    """Still running: exists and is not a zombie (an orphan whose reaper is slow)."""
    return _state(pid) not in (None, "Z", "X")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and _running(int(entry)):
            out.append(int(entry))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_until(cond, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# --------------------------------------------------------------------------------------------
# the lock


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from iein.reproduce.runner import driver_lock
    with driver_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(120)
""")


def test_second_driver_refused_while_first_alive_then_free_after_kill(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        with pytest.raises(ConfigError) as err:
            reproduce(tmp_path, "meld", quick=True, workers=0, log=lambda _msg: None)
        msg = str(err.value)
        assert "\n" not in msg and f"pid {holder.pid}" in msg and "another `iein reproduce`" in msg
        assert not (tmp_path / "runs.jsonl").exists()  # refused before reading or writing anything
        with pytest.raises(ConfigError, match="another `iein reproduce`"):
            with driver_lock(tmp_path):
                pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        holder.kill()
        holder.wait()
    with driver_lock(tmp_path):  # the kernel dropped the dead driver's lock: a rerun resumes
        with pytest.raises(ConfigError):  # ... and holds it against others, this process too
            with driver_lock(tmp_path):
                pass
    with driver_lock(tmp_path):  # released on exit
        pass


def test_folder_that_cannot_be_locked_warns_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import fcntl

    def refuse(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refuse)
    logged: list[str] = []
    with driver_lock(tmp_path, logged.append):
        pass
    assert len(logged) == 1 and logged[0].startswith(f"warning: {tmp_path}: cannot lock the folder")


# --------------------------------------------------------------------------------------------
# a worker whose parent is SIGKILLed


INTERMEDIATE = textwrap.dedent("""
    import subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    print(grandchild.pid, flush=True)
    time.sleep(120)
""")
ORPHAN = {
    # the kernel's parent-death signal alone
    "prctl": "from iein.reproduce.worker import kill_me_with_parent as f; assert f()",
    # the polling fallback alone (what other systems get)
    "watchdog": "import os; from iein.reproduce.worker import watch_parent as f; f(os.getppid(), 0.1)",
}


@pytest.mark.parametrize("how", sorted(ORPHAN))
def test_worker_ends_when_its_parent_is_killed(how: str) -> None:
    code = ORPHAN[how] + "\nprint('armed', flush=True)\nimport time; time.sleep(120)"
    parent = subprocess.Popen([sys.executable, "-c", INTERMEDIATE, code], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())  # type: ignore[union-attr, arg-type]
        assert parent.stdout.readline().strip() == "armed"  # type: ignore[union-attr]
        assert _running(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert _wait_until(lambda: not _running(worker), timeout=5), f"orphan {worker} still running ({how})"
    finally:
        parent.kill()
        parent.wait()
        if "worker" in locals() and _running(worker):
            os.kill(worker, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# end to end: the real command


@pytest.mark.slow
def test_killed_reproduce_leaves_no_live_worker(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "repro"
    cmd = [sys.executable, "-c", "import sys; from iein.cli import main; sys.exit(main())", "reproduce",
           "--quick", "--dataset", "meld", "--out", str(out), "--workers", "2", "--data-root", str(shared_data)]
    errlog = tmp_path / "driver.stderr"
    with open(errlog, "wb") as err:
        driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    children: list[int] = []
    second = None
    try:
        # the driver locks the folder first thing; a second driver started now is refused
        # while the first is still loading data (overlapping the two start-ups saves time)
        lock = out / ".lock"
        assert _wait_until(lambda: lock.is_file() and lock.read_text().strip() == str(driver.pid), timeout=60), \
            errlog.read_text()
        second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def workers_training() -> bool:
            kids = _children(driver.pid)
            busy = [k for k in kids if "spawn_main" in _cmdline(k)
                    and "libtorch" in Path(f"/proc/{k}/maps").read_text(errors="replace")]
            children[:] = kids
            return len(busy) == 2 or driver.poll() is not None

        # a worker maps libtorch only after its initializer armed die_with_parent
        assert _wait_until(workers_training, timeout=90, step=0.2), "workers never started"
        assert driver.poll() is None, errlog.read_text()
        assert any("resource_tracker" in _cmdline(k) for k in children)

        _, second_err = second.communicate(timeout=60)
        assert second.returncode == 2
        assert second_err.strip().splitlines() == [
            f"error: {out}: another `iein reproduce` (pid {driver.pid}) is running on this folder; "
            "wait for it to finish or stop it, then rerun to resume"]

        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        t0 = time.monotonic()
        assert _wait_until(lambda: not any(_running(k) for k in children), timeout=5), \
            [(k, _cmdline(k)) for k in children if _running(k)]
        print(f"workers and tracker gone {time.monotonic() - t0:.2f} s after the kill")
    finally:
        for proc in (driver, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for k in children:
            if _running(k):
                os.kill(k, signal.SIGKILL)
    assert "leaked semaphore" not in errlog.read_text()

"""``iein train --resume`` after a real SIGKILL, mid-epoch and between epochs.

A run is started as its own process (``python -m iein train``) and killed with SIGKILL at a
known point (a :class:`~iein.training.callbacks.PauseAt` callback makes it sleep there); ``--resume``
continues it.  The result must be what the same command gives uninterrupted: every weight
``torch.equal``, the same dev/test scores and the same history (apart from timings), with
at most the unfinished epoch redone.  Bad resume states are one ``error:`` line.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
import torch
from safetensors.torch import load_file

from iein.cli import main
from iein.errors import CheckpointError
from tests.conftest import kill_when_paused, start_paused_train
from iein.training.trainer import RESUME_FORMAT, load_resume_state, read_resume_state, side_files

#: Tiny IEIN, 5 batches an epoch, dropout on (so the RNG states must be restored too).
TRAIN_ARGS = ["--set", "encoder.hidden=8", "--set", "emotion_dim=4", "--set", "batch_size=8", "--set", "lr=0.01",
              "--threads", "1", "--epochs", "5", "--seed", "1"]


@pytest.fixture(scope="module")
def corpus_args(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """40/10/10 MELD dialogues written in the generic JSONL layout."""
    from iein.data.registry import load_corpus

    meld = load_corpus("meld", shared_data / "meld")
    folder = tmp_path_factory.mktemp("corpus")
    args = []
    for split, n in (("train", 40), ("dev", 10), ("test", 10)):
        path = write_jsonl(folder / f"{split}.jsonl", meld[split][:n])
        args += [f"--{split}", str(path)]
    return args


def start(args: list[str], pause_at: str) -> subprocess.Popen:
    """``iein train ARGS`` in a fresh process that pauses at ``pause_at``."""
    return start_paused_train(args, pause_at)


def epochs_logged(lines: list[str]) -> list[int]:
    return [int(line.split("|")[0].split()[1]) for line in lines if line.startswith("epoch ")]


def finished_epochs(out: Path) -> int:
    """Epochs recorded in ``out``'s resume state (read as the trainer reads it)."""
    state = read_resume_state(side_files(out)[1])
    return len(json.loads(state["history"]))


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    """``iein ARGV`` in this process: exit status and stderr lines."""
    code = main(argv)
    return code, capsys.readouterr().err.splitlines()


def assert_one_error_line(code: int, err: list[str], *fragments: str) -> None:
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and errors[0] == err[-1], err
    assert all(f in errors[0] for f in fragments), errors[0]
    assert not any("Traceback" in line for line in err)


def without_timings(summary: dict) -> dict:
    drop = {"seconds_per_epoch", "checkpoint"}
    out = {k: v for k, v in summary.items() if k not in drop}
    out["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in summary["history"]]
    return out


def test_resume_state_of_another_layout_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "old.resume.pt"
    torch.save({"format": "iein-resume/1", "identity": "x"}, path)
    with pytest.raises(CheckpointError, match=f"iein-resume/1, this iein reads {RESUME_FORMAT}"):
        load_resume_state(path, "x")
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="not an iein resume state$"):
        load_resume_state(path, "x")


@pytest.mark.slow  # two fresh interpreters (torch import): ~1 min on a busy 2-core machine
def test_sigkilled_run_resumes_bit_identically(corpus_args: list[str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cut.safetensors"
    args = [*corpus_args, *TRAIN_ARGS, "--out", str(out)]
    best, state = side_files(out)

    # (a) killed mid-epoch 2, right after its 3rd of 5 optimiser steps
    first = start(args, pause_at="2.3")
    # meanwhile (the subprocess is importing torch): the uninterrupted reference, in this process
    ref = tmp_path / "ref.safetensors"
    code, _ = cli(["train", *corpus_args, *TRAIN_ARGS, "--out", str(ref)], capsys)
    assert code == 0
    lines = kill_when_paused(first)
    assert epochs_logged(lines) == [1]
    assert not out.exists() and state.exists() and best.exists()  # the target is only written at the end
    assert finished_epochs(out) == 1
    saved = tmp_path / "after-epoch-1.resume.pt"
    shutil.copy(state, saved)

    # (b) resumed, then killed between epochs: right after epoch 3's resume state is written
    second = start([*args, "--resume"], pause_at="3")
    # meanwhile: resume states that must be refused, each with one error line
    bad = tmp_path / "bad.safetensors"
    bad_args = ["train", *corpus_args, *TRAIN_ARGS, "--out", str(bad), "--resume"]
    shutil.copy(saved, side_files(bad)[1])
    code, err = cli([*bad_args[:-1], "--set", "lr=0.02", "--resume"], capsys)
    assert_one_error_line(code, err, str(side_files(bad)[1]), "different configuration")
    side_files(bad)[1].write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])  # truncated
    code, err = cli(bad_args, capsys)
    assert_one_error_line(code, err, str(side_files(bad)[1]), "unreadable resume state")
    side_files(bad)[1].write_bytes(os.urandom(4096))  # not a torch file at all
    code, err = cli(bad_args, capsys)
    assert_one_error_line(code, err, str(side_files(bad)[1]), "unreadable resume state")
    side_files(bad)[1].unlink()
    code, err = cli(bad_args, capsys)
    assert_one_error_line(code, err, "--resume: no resume state", str(side_files(bad)[1]))
    assert not bad.exists() and not side_files(bad)[0].exists()

    lines = kill_when_paused(second)
    # at most one epoch lost: the run killed in epoch 2 restarts at epoch 2
    assert any(line.startswith("resuming after epoch 1 ") for line in lines), lines
    assert epochs_logged(lines) == [2, 3]
    assert not out.exists() and finished_epochs(out) == 3

    # (c) resumed to the end, in this process: restarts after epoch 3, ends as the reference did
    code, err = cli(["train", *args, "--resume"], capsys)
    assert code == 0
    assert any(line.startswith("resuming after epoch 3 ") for line in err), err
    assert epochs_logged(err) == [4, 5]
    assert out.exists() and not state.exists() and not best.exists()

    got, want = load_file(str(out)), load_file(str(ref))
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]
    summary = json.loads(out.with_suffix(".json").read_text())
    ref_summary = json.loads(ref.with_suffix(".json").read_text())
    assert summary["epochs_run"] == 5 and summary["test"] is not None
    assert without_timings(summary) == without_timings(ref_summary)
    # the run learnt something, so equal scores are not two constant predictors agreeing
    assert len({h["dev_score"] for h in summary["history"]}) > 1

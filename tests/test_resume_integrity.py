"""What ``iein train`` reads back or leaves behind after a kill: a checksummed resume state
(bit flips and metadata edits refused in one line), stale temporaries cleaned, a killed run's
state never silently discarded; and labels that differ only in case refused."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from iein.cli import main
from iein.data.conversation import Conversation, Utterance
from iein.training.trainer import side_files
from tests.conftest import kill_when_paused, start_paused_train
from tests.conftest import write_jsonl

ARGS = ["--set", "encoder.hidden=8", "--set", "emotion_dim=4", "--set", "batch_size=8", "--threads", "1",
        "--epochs", "3", "--seed", "1"]


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from iein.data.registry import load_corpus

    meld = load_corpus("meld", shared_data / "meld")
    folder = tmp_path_factory.mktemp("corpus")
    args = []
    for split, n in (("train", 24), ("dev", 6), ("test", 6)):
        args += [f"--{split}", str(write_jsonl(folder / f"{split}.jsonl", meld[split][:n]))]
    return args


@pytest.fixture(scope="module")
def killed(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A run killed right after its epoch-1 resume state was written: (out, the state's bytes)."""
    out = tmp_path_factory.mktemp("killed") / "run.safetensors"
    kill_when_paused(start_paused_train([*corpus, *ARGS, "--out", str(out)], "1"))
    state = side_files(out)[1]
    assert state.is_file() and not out.exists()
    return out, state.read_bytes()


def fresh_copy(killed: tuple[Path, bytes], tmp_path: Path) -> Path:
    out = tmp_path / killed[0].name
    side_files(out)[1].write_bytes(killed[1])
    return out


def one_error(capsys: pytest.CaptureFixture, code: int, *fragments: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and errors[0] == err[-1], err
    assert not any("Traceback" in line or "Warning" in line for line in err), err
    assert all(f in errors[0] for f in fragments), errors[0]
    return errors[0]


@pytest.mark.slow  # a fresh interpreter for the killed run
def test_flipped_bit_in_the_resume_states_tensors_is_refused(killed, corpus, tmp_path, capsys):
    from iein.training.trainer import read_resume_state

    out = fresh_copy(killed, tmp_path)
    state = side_files(out)[1]
    envelope = torch.load(state, weights_only=True)
    inner = envelope["payload"].numpy().tobytes()
    blob = bytearray(killed[1])
    start = bytes(blob).find(inner[:4096])
    assert start >= 0  # the payload lies in the file as stored bytes
    rng = np.random.default_rng(0)
    offset = start + int(rng.integers(len(inner) // 2, len(inner)))  # in the tensors, past the pickle
    blob[offset] ^= 1 << int(rng.integers(8))
    state.write_bytes(bytes(blob))
    code = main(["train", *corpus, *ARGS, "--out", str(out), "--resume"])
    one_error(capsys, code, str(state), "checksum mismatch", "start over")
    assert not out.exists()
    # the untouched state reads back
    side_files(out)[1].write_bytes(killed[1])
    assert len(read_resume_state(side_files(out)[1])["history"]) > 2


@pytest.mark.slow
def test_edited_checksum_is_refused(killed, corpus, tmp_path, capsys):
    out = fresh_copy(killed, tmp_path)
    state = side_files(out)[1]
    envelope = torch.load(state, weights_only=True)
    blob = killed[1]
    digest = envelope["sha256"].encode()
    at = blob.find(digest)
    assert at >= 0
    edited = blob[:at] + (b"0" if digest[:1] != b"0" else b"1") + blob[at + 1:]
    state.write_bytes(edited)
    code = main(["train", *corpus, *ARGS, "--out", str(out), "--resume"])
    one_error(capsys, code, str(state))


class _Unsafe:
    """Any object a weights-only load refuses (a pickle of code, for all iein knows)."""


def test_a_pickled_resume_state_is_refused_without_pointing_at_unpickling(corpus, tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    torch.save({"format": "iein-resume/3", "payload": _Unsafe()}, side_files(out)[1])
    code = main(["train", *corpus, *ARGS, "--out", str(out), "--resume"])
    line = one_error(capsys, code, str(side_files(out)[1]), "pickled objects, which iein never loads")
    assert "trust" not in line and "\x1b" not in line  # torch's advice to load it anyway is not passed on


@pytest.mark.parametrize("head", [b"\x80\x02", b"\x80\x04", b"", b"PK"])
def test_garbage_is_unreadable_not_pickled(head, tmp_path):
    """Random bytes, even ones that open like a pickle (torch then says "Weights only load
    failed" too), are an unreadable file, not a file of pickled objects."""
    from iein.errors import CheckpointError
    from iein.training.resume_state import read_resume_state
    path = tmp_path / "x.resume.pt"
    for seed in range(20):
        path.write_bytes(head + np.random.default_rng(seed).bytes(4096))
        with pytest.raises(CheckpointError, match="unreadable resume state"):
            read_resume_state(path)


@pytest.mark.slow
def test_a_killed_runs_state_is_never_silently_discarded(killed, corpus, tmp_path, capsys):
    out = fresh_copy(killed, tmp_path)
    state = side_files(out)[1]
    code = main(["train", *corpus, *ARGS, "--out", str(out)])
    one_error(capsys, code, str(state), "--resume", "--force")
    assert state.read_bytes() == killed[1]  # untouched
    # a stale temporary of an interrupted state write is cleaned by the resumed run
    stale = state.with_name(f".{state.name}.iein-tmp-999999-abcdefgh.pt")
    stale.write_bytes(b"x" * 100)
    os.utime(stale, (1, 1))
    assert main(["train", *corpus, *ARGS, "--out", str(out), "--resume"]) == 0
    assert out.exists() and not state.exists() and not stale.exists()
    # --force starts over, saying it removed the state
    (tmp_path / "b").mkdir()
    out2 = fresh_copy(killed, tmp_path / "b")
    capsys.readouterr()
    assert main(["train", *corpus, *ARGS, "--out", str(out2), "--force"]) == 0
    assert "removed the killed run's state" in capsys.readouterr().err


def test_labels_differing_only_in_case_are_refused(tmp_path, capsys):
    convs = [Conversation(f"c{i}", [Utterance("a", "we won", "Joy" if i == 1 else "joy"),
                                    Utterance("b", "oh no", "neutral")]) for i in range(3)]
    train = write_jsonl(tmp_path / "train.jsonl", convs)
    code = main(["train", "--train", str(train), "--dev-fraction", "0.3", "--threads", "1", "--epochs", "1",
                 "--out", str(tmp_path / "m.safetensors")])
    line = one_error(capsys, code, "'joy'", "'Joy'", "differ only in case", "conversation 'c1' utterance 0",
                     str(train))
    assert "conversation 'c0' utterance 0" in line
    assert not (tmp_path / "m.safetensors").exists()

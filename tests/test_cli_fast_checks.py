"""CLI checks that must happen before torch is imported or any data is read (issue 13,
items 1, 5, 6 and 8): one clear line naming the flag, in a fresh interpreter where we can
see whether torch was loaded at all."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from iein.cli import main
from iein.data.conversation import Conversation, Corpus, Utterance


def _iein(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from iein.cli import main; rc = main(sys.argv[1:]); "
            "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("argv,flag", [
    (["train", "--dataset", "meld", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["train", "--dataset", "meld", "--threads", "0"], "--threads must be >= 1"),
    (["train", "--train", "t.jsonl"], "no --dev file"),
    (["train", "--train", "missing.jsonl", "--dev", "d.jsonl"], "--train missing.jsonl: file not found"),
    (["predict", "--batch-size", "0", "x.jsonl"], "--batch-size must be positive"),
    (["predict", "missing.jsonl"], "missing.jsonl: input file not found"),
    (["evaluate", "--model", "meld", "--dev", "d.jsonl"], "--split test: no --test file given"),
])
def test_bad_arguments_fail_before_torch(tmp_path, argv, flag):
    (tmp_path / "t.jsonl").write_text('{"utterances": [{"speaker": "a", "text": "hi", "label": "x"}]}\n')
    (tmp_path / "d.jsonl").write_text('{"utterances": [{"speaker": "a", "text": "hi", "label": "x"}]}\n')
    r = _iein(*argv, cwd=tmp_path)
    err = [line for line in r.stderr.strip().splitlines() if line not in ("TORCH_LOADED", "NO_TORCH")]
    assert r.returncode == 2 and len(err) == 1 and err[0].startswith("error: ") and flag in err[0], r.stderr
    assert "NO_TORCH" in r.stderr, "torch was imported before the arguments were checked"
    assert "Traceback" not in r.stderr


def _toy() -> Corpus:
    def conv(i: int) -> Conversation:
        labels = ["no emotion", "happy", "no emotion", "sad"]
        return Conversation(f"c{i}", [Utterance("ab"[j % 2], f"word{j} word{i % 3}", labels[(i + j) % 4])
                                      for j in range(4)])

    return Corpus("toy", ("no emotion", "happy", "sad"),
                  {"train": [conv(i) for i in range(8)], "dev": [conv(i) for i in range(8, 11)], "test": []},
                  notes={"train": ["dropped the unlabelled last utterance of dialogue 7"]})


def test_epoch_line_names_the_selection_metric_and_train_prints_data_notes():
    from iein.training.experiment import resolve_experiment
    from iein.training.trainer import prepare, train

    lines: list[str] = []
    data = prepare(_toy(), log=lines.append)
    assert any("data note (toy/train): dropped the unlabelled last utterance of dialogue 7" in x for x in lines)
    exp = resolve_experiment("generic", overrides={"encoder.hidden": 4, "emotion_dim": 2,
                                                   "train.exclude_label": "no emotion"}, max_epochs=2, threads=1)
    result = train(data, exp, log=lines.append)
    epoch_lines = [x for x in lines if x.startswith("epoch ")]
    assert len(epoch_lines) == 2
    for line, row in zip(epoch_lines, result.history):
        # the selection metric, by name, with the value that chose the best epoch
        assert f"dev micro-F1 excl. {row['dev_score']:.2f}" in line
    plain = resolve_experiment("generic", overrides={"encoder.hidden": 4, "emotion_dim": 2}, max_epochs=1, threads=1)
    lines.clear()
    train(data, plain, log=lines.append)
    assert any(x.startswith("epoch ") and " dev w-F1 " in x for x in lines)


def test_pre_training_errors_print_once_under_torchrun(monkeypatch, capsys):
    """Every torchrun rank runs the same checks; only rank 0 prints the one-line error."""
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--dataset", "meld", "--epochs", "0"]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "--dataset", "meld", "--epochs", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --epochs must be >= 1")

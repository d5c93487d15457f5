"""Shared test fixtures: where the real corpora live (read-only, never copied)."""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IEIN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def _tiny_meld(shared_data: Path, out: Path, causal: bool) -> Path:
    from iein.data.conversation import Corpus
    from iein.data.registry import load_corpus
    from iein.training.config import TrainConfig
    from iein.training.experiment import ExperimentConfig
    from iein.training.trainer import prepare, train

    corpus = load_corpus("meld", shared_data / "meld")
    small = Corpus(corpus.name, corpus.labels,
                   {"train": corpus["train"][:30], "dev": corpus["dev"][:8], "test": corpus["test"][:4]})
    exp = ExperimentConfig("generic", "iein", "glove-bigru", model=dict(emotion_dim=4, iterations=2, causal=causal),
                           encoder_config=dict(hidden=8), train=TrainConfig(max_epochs=1, threads=1))
    train(prepare(small, log=lambda _: None), exp, out=out, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tiny_meld_checkpoint(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real IEIN checkpoint (T = 2), trained once per test session on 30 MELD
    training dialogues for one epoch: for tests of the API, service and page, where the
    weights only need to be real, not good."""
    return _tiny_meld(shared_data, tmp_path_factory.mktemp("tiny") / "tiny.safetensors", causal=False)


@pytest.fixture(scope="session")
def tiny_meld_live_checkpoint(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, causal (``causal=true``): a model that can label live conversations."""
    return _tiny_meld(shared_data, tmp_path_factory.mktemp("tiny-live") / "tiny-live.safetensors", causal=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory served, base URL) of an HTTP server on 127.0.0.1 (404 for anything not in
    the directory), shut down afterwards: downloads are tested without a network."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def write_jsonl(path: Path, conversations) -> Path:
    """Conversations in the generic JSONL layout (README), for tests that drive the CLI."""
    import json

    with path.open("w", encoding="utf-8") as fh:
        for conv in conversations:
            utts = [{"speaker": u.speaker, "text": u.text, "label": u.label} for u in conv.utterances]
            fh.write(json.dumps({"id": conv.id, "utterances": utts}) + "\n")
    return path


def stage1_file_in(folder: Path) -> Path:
    """The stage-1 model a two-stage ``iein train`` keeps in its ``--out`` folder
    (``<data>-<preset>-seed<N>-<hash>.safetensors``, see :func:`iein.training.pipeline.stage1_file`),
    finished or, from its resume state, still to be written."""
    import re

    names = {re.sub(r"\.(best\.safetensors|resume\.pt)$", ".safetensors", p.name) for p in folder.iterdir()
             if re.search(r"-seed\d+-[0-9a-f]{12}\.(safetensors|best\.safetensors|resume\.pt)$", p.name)}
    assert len(names) == 1, f"expected one stage-1 model in {folder}, found {sorted(names)}"
    return folder / names.pop()


#: ``python -c`` program: ``iein train ARGV[2:]`` stopped by :class:`iein.training.callbacks.PauseAt` at ARGV[1]
_PAUSED_TRAIN = ("import sys; from iein.cli import main; from iein.training.callbacks import PauseAt; "
                 "sys.exit(main(['train', *sys.argv[2:]], callbacks=[PauseAt(sys.argv[1])]))")


def start_paused_train(args: list[str], point: str, env: dict | None = None):
    """``iein train ARGS`` in a fresh process that stops at ``point`` (``"E"`` after epoch E,
    ``"E.B"`` after step B of epoch E), for :func:`kill_when_paused`."""
    import os
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", _PAUSED_TRAIN, point, *args], env=dict(os.environ, **(env or {})),
                            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when_paused(proc, timeout: float = 600) -> list[str]:
    """Wait for the pause announcement, then SIGKILL; the process's stderr lines."""
    import os
    import signal
    import threading

    from iein.training.callbacks import PAUSED

    lines: list[str] = []
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith(PAUSED):
                break
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert lines and lines[-1].startswith(PAUSED), "run ended before its pause point:\n" + "\n".join(lines)
    assert proc.returncode == -signal.SIGKILL
    return lines


def overfit_losses(params, loss_fn: Callable[[], Any], lr: float, steps: int = 30) -> list[float]:
    """Adam on ``params`` for ``steps`` steps of ``loss_fn()``: the losses, for the tests that
    check a model can fit two dialogues (its loss and gradients are wired right)."""
    import torch

    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses

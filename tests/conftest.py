"""Shared test fixtures: where the real corpora live (read-only, never copied)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IEIN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_meld_checkpoint(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real IEIN checkpoint (T = 2), trained once per test session on 30 MELD
    training dialogues for one epoch: for tests of the API, service and page, where the
    weights only need to be real, not good."""
    from iein.data.conversation import Corpus
    from iein.data.registry import load_corpus
    from iein.training.config import TrainConfig
    from iein.training.experiment import ExperimentConfig
    from iein.training.trainer import prepare, train

    corpus = load_corpus("meld", shared_data / "meld")
    small = Corpus(corpus.name, corpus.labels,
                   {"train": corpus["train"][:30], "dev": corpus["dev"][:8], "test": corpus["test"][:4]})
    out = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    exp = ExperimentConfig("generic", "iein", "glove-bigru", model=dict(emotion_dim=4, iterations=2),
                           encoder_config=dict(hidden=8), train=TrainConfig(max_epochs=1, threads=1))
    train(prepare(small, log=lambda _: None), exp, out=out, log=lambda _: None)
    return out

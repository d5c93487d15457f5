"""Data-parallel training (``torchrun ... -m iein train``) equals one process with the same
global batch; rank 0 alone logs and writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_jsonl
import torch
from safetensors.torch import load_file

from iein.cli import main
from iein.data.batching import IGNORE, EncodedConversation
from iein.errors import ConfigError
from iein.training.distributed import Context, check_batch_size, rank_batches

#: Tiny IEIN without dropout (each process draws its own dropout masks, so with dropout the
#: runs agree in distribution only); patience 1 so that early stopping has to agree too.
TRAIN_ARGS = ["--set", "encoder.hidden=8", "--set", "emotion_dim=4", "--set", "batch_size=8", "--set", "lr=0.03",
              "--set", "model.dropout=0", "--set", "encoder.dropout=0", "--set", "patience=1",
              "--threads", "1", "--epochs", "6", "--seed", "1"]
#: Weights of 2 processes vs 1 after 30 steps: the sums over processes are added in another
#: order, so float32 rounding differs.  Measured: max |diff| 3e-5 (word embeddings, |w| up to
#: 4.4), under 4e-6 elsewhere; DDP's plain mean of per-process means (no utterance weighting)
#: is off by 3e-2 to 0.5 on every tensor.
RTOL, ATOL = 1e-4, 1e-4
CPU = torch.device("cpu")


def conv(i: int, n: int, labelled: bool = True) -> EncodedConversation:
    labels = np.arange(n) % 3 if labelled else np.full(n, IGNORE)
    return EncodedConversation(f"d{i}", [np.array([1])] * n, labels.astype(np.int64), np.zeros(n, dtype=np.int64))


@pytest.mark.parametrize("world,n,batch", [(2, 41, 8), (2, 9, 8), (3, 20, 8), (2, 16, 8)])
def test_rank_batches_split_each_global_batch(world: int, n: int, batch: int) -> None:
    data = [conv(i, 1 + i % 4) for i in range(n)]
    order = np.random.default_rng(0).permutation(n)
    per_rank = [list(rank_batches(data, order, batch, lambda f: None, Context(r, world, CPU))) for r in range(world)]
    steps = -(-n // batch)
    assert all(len(b) == steps for b in per_rank)  # every process makes every step
    for s in range(steps):
        global_batch = [int(i) for i in order[s * batch: (s + 1) * batch]]
        parts = [per_rank[r][s] for r in range(world)]
        labelled = [bool((p.labels != IGNORE).any()) for p in parts]
        real = [p for p, keep in zip(parts, labelled) if keep]
        # the labelled parts, in rank order, are exactly the global batch of one process
        assert [i for p in real for i in p.index] == global_batch
        for p, keep in zip(parts, labelled):
            if not keep:  # a stand-in: one dialogue of the batch, without labels
                assert len(p.index) == 1 and p.index[0] in global_batch
        assert max(len(p.index) for p in real) - min(len(p.index) for p in real) <= 1


def test_batch_smaller_than_world_is_refused() -> None:
    with pytest.raises(ConfigError, match="smaller than the 4 processes"):
        check_batch_size(2, Context(0, 4, CPU))
    check_batch_size(4, Context(0, 4, CPU))


DRIVER = """\
import os, sys
os.chdir(os.path.join(sys.argv[1], "rank" + os.environ["RANK"]))  # each process in its own folder
from iein.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_processes_equal_one(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from iein.data.registry import load_corpus

    meld = load_corpus("meld", shared_data / "meld")
    corpus = []
    # 41 train dialogues, 8 a global batch: the last batch has 1 dialogue, so rank 1 gets a stand-in
    for split, n in (("train", 41), ("dev", 10), ("test", 10)):
        path = write_jsonl(tmp_path / f"{split}.jsonl", meld[split][:n])
        corpus += [f"--{split}", str(path)]
    for r in (0, 1):
        (tmp_path / f"rank{r}").mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(driver),
           str(tmp_path), "train", *corpus, *TRAIN_ARGS, "--out", "model.safetensors"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # meanwhile, one process with the same global batch
    one = tmp_path / "one.safetensors"
    assert main(["train", *corpus, *TRAIN_ARGS, "--out", str(one)]) == 0
    capsys.readouterr()
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]

    # rank 0 logs once and writes the checkpoint and results; rank 1 writes nothing
    assert sorted(p.name for p in (tmp_path / "rank0").iterdir()) == ["model.json", "model.safetensors"]
    assert list((tmp_path / "rank1").iterdir()) == []
    assert stderr.count("epoch   1 |") == 1 and stdout.count("best epoch") == 1

    two = tmp_path / "rank0" / "model.safetensors"
    got, want = load_file(str(two)), load_file(str(one))
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=RTOL, atol=ATOL, msg=k)
    s2 = json.loads(two.with_suffix(".json").read_text())
    s1 = json.loads(one.with_suffix(".json").read_text())
    assert s2["dev"] == s1["dev"] and s2["test"] == s1["test"] and s2["best_epoch"] == s1["best_epoch"]
    assert [h["dev_score"] for h in s2["history"]] == [h["dev_score"] for h in s1["history"]]
    np.testing.assert_allclose([h["loss"] for h in s2["history"]], [h["loss"] for h in s1["history"]], rtol=1e-5)
    # early stopping stopped both runs at the same epoch, before the budget of 6
    assert s2["epochs_run"] == s1["epochs_run"] < 6
    assert len({h["dev_score"] for h in s1["history"]}) > 1  # it learnt: not two constant predictors

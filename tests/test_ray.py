"""The Ray backends (issue 11, parts 3-5): ``iein reproduce --backend ray`` records the same
runs as the local pool, also when a worker is killed mid-run, and ``iein predict --backend
ray`` writes the local path's records, in input order, each conversation once.

One local two-CPU Ray cluster serves the whole module (the commands join a cluster that this
process already started, and leave it running)."""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray backends need iein[ray]")

from iein.cli import main  # noqa: E402
from iein.errors import ConfigError  # noqa: E402
from iein.reproduce.records import read_records, strip_timing  # noqa: E402
from iein.reproduce.runner import reproduce  # noqa: E402

RUN_TITLE = "ray::iein-run "  # a Ray worker's process title while it runs one of our tasks


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _runs(out: Path) -> list[dict]:
    return [r for r in read_records(out / "runs.jsonl") if r["kind"] == "run"]


def _comparable(run: dict) -> dict:
    """A run record without what depends on the moment or the process."""
    return {k: v for k, v in strip_timing(run).items() if k != "worker_pid"}


# --------------------------------------------------------------------------------------------
# argument errors: one line, before any work (no cluster needed)


def test_missing_ray_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'iein\[ray\]'"):
        reproduce(tmp_path / "out", "meld", quick=True, backend="ray")
    assert not (tmp_path / "out").exists()


def test_flag_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(ConfigError, match="--address"):
        reproduce(tmp_path / "a", "meld", quick=True, address="127.0.0.1:6379")
    with pytest.raises(ConfigError, match="--workers 0"):
        reproduce(tmp_path / "b", "meld", quick=True, backend="ray", workers=0)
    assert main(["predict", "--backend", "ray", "-"]) == 2
    assert "not stdin" in capsys.readouterr().err
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"utterances": [["A", "hi"]]}\n')
    assert main(["predict", str(inp), "--concurrency", "2"]) == 2
    assert "--backend ray" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# reproduce


def _kill_first_run(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running one of our runs (by its process title), once."""
    while not stop.is_set() and not killed:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(RUN_TITLE.encode()):
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
                return
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker in /proc")
def test_reproduce_on_ray_equals_local_even_with_a_killed_worker(shared_data: Path, tmp_path: Path, cluster,
                                                                 capsys: pytest.CaptureFixture[str]):
    common = ["reproduce", "--quick", "--only", "cnn", "--dataset", "meld", "--data-root", str(shared_data)]
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert main(common + ["--workers", "0", "--out", str(local)]) == 0

    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_run, args=(killed, stop), daemon=True)
    killer.start()
    try:
        assert main(common + ["--backend", "ray", "--out", str(on_ray)]) == 0
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was seen running a training"

    want = {r["key"]: _comparable(r) for r in _runs(local)}
    runs = _runs(on_ray)
    assert len(want) == 2 and sorted(r["key"] for r in runs) == sorted(want)  # nothing lost, nothing twice
    assert {r["key"]: _comparable(r) for r in runs} == want  # same scores, same predictions
    assert all(r["worker_pid"] not in killed for r in runs)  # the killed attempt recorded nothing
    assert (on_ray / "report.md").is_file()

    # resuming: every key is done, nothing runs again, nothing is appended twice
    capsys.readouterr()
    assert main(common + ["--backend", "ray", "--out", str(on_ray)]) == 0
    assert "0 runs done now, 2 before" in capsys.readouterr().out
    assert len(_runs(on_ray)) == 2


# --------------------------------------------------------------------------------------------
# predict


def _conversations(n_utterances: int, seed: int, prefix: str) -> list[dict]:
    """Many small conversations (1-9 utterances) of random everyday words, a few labelled
    and a few with empty text."""
    rng = random.Random(seed)
    words = ("i you we they love hate what why no yes oh my god great terrible really okay sorry thanks "
             "wow please stop come here now").split()
    convs, k = [], 0
    while k < n_utterances:
        n = min(rng.randint(1, 9), n_utterances - k)
        utts = []
        for _ in range(n):
            utt = {"speaker": rng.choice(["Ross", "Rachel", "Joey"]),
                   "text": " ".join(rng.choices(words, k=rng.randint(0, 12)))}
            if rng.random() < 0.05:
                utt["label"] = rng.choice(["joy", "anger", "neutral"])
            utts.append(utt)
        convs.append({"id": f"{prefix}{len(convs)}", "utterances": utts})
        k += n
    return convs


def _write_jsonl(path: Path, convs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in convs), encoding="utf-8")
    return path


def _assert_same_predictions(got: list[dict], want: list[dict]) -> None:
    """Same conversations in the same order, same labels of every step; probabilities equal
    to the last printed digit (padding in another batch may move a float's last bit)."""
    assert [c["id"] for c in got] == [c["id"] for c in want]
    for g, w in zip(got, want):
        assert len(g["utterances"]) == len(w["utterances"])
        for gu, wu in zip(g["utterances"], w["utterances"]):
            assert {k: v for k, v in gu.items() if k != "probs"} == {k: v for k, v in wu.items() if k != "probs"}
            assert gu["probs"] == pytest.approx(wu["probs"], abs=2e-6)


def _write_csv(path: Path, convs: list[dict]) -> Path:
    rows = ["dialogue_id,speaker,text,label"] + [f"{c['id']},{u['speaker']},{u['text']},{u.get('label', '')}"
                                                 for c in convs for u in c["utterances"]]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _local_jsonl(inp: Path, out: Path) -> list[dict]:
    assert main(["predict", "--model", "meld", str(inp), "--threads", "1", "--out", str(out)]) == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_predict_on_ray_equals_local_in_input_order(tmp_path: Path, cluster):
    """A folder of a 2,000-utterance JSONL file and a CSV file in a subfolder: the output is
    the local outputs of the two files, one after the other, each conversation once."""
    folder = tmp_path / "in"
    (folder / "b").mkdir(parents=True)
    first = _write_jsonl(folder / "a.jsonl", _conversations(2000, seed=0, prefix="a"))
    second = _write_csv(folder / "b" / "z.csv", _conversations(150, seed=1, prefix="z"))  # read after a.jsonl
    (folder / "notes.txt").write_text("not an input")
    out = tmp_path / "labels.jsonl"
    assert main(["predict", "--model", "meld", "--backend", "ray", str(folder), "--out", str(out)]) == 0
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    want = _local_jsonl(first, tmp_path / "a.jsonl") + _local_jsonl(second, tmp_path / "z.jsonl")
    assert [c["id"] for c in want][:3] == ["a0", "a1", "a2"] and want[-1]["id"].startswith("z")
    assert len({c["id"] for c in got}) == len(got)  # each conversation once ...
    assert sum(len(c["utterances"]) for c in got) == 2150
    _assert_same_predictions(got, want)  # ... in input order, labelled as locally


def test_labeller_writes_the_local_csv_rows(tmp_path: Path):
    """The actor's CSV text (no cluster: the class called in this process) is the local
    ``iein predict``'s CSV, row for row, from blocks as the read task makes them."""
    from iein.batch_predict import Labeller, read_input_file
    from iein.recognizer import resolve_model
    from iein.utils import torch_threads

    inp = _write_csv(tmp_path / "talk.csv", _conversations(120, seed=3, prefix="t"))
    local = tmp_path / "local.csv"
    assert main(["predict", "--model", "meld", str(inp), "--threads", "1", "--out", str(local)]) == 0
    with torch_threads(1):
        labeller = Labeller(resolve_model("meld").read_bytes(), "meld", [str(inp)], "csv", 8, 1)
        text, seqs = [], []
        for block in read_input_file(inp, str(inp), "csv", 0, 16):  # several blocks of 16 conversations
            out = labeller({k: block[k].to_numpy(zero_copy_only=False) for k in block.column_names})
            text += list(out["text"])
            seqs += out["seq"].tolist()
    assert seqs == list(range(len(seqs))) and len(text) > 16
    want = local.read_text(encoding="utf-8").splitlines()[1:]  # without the header
    got = "".join(text).splitlines()
    assert len(got) == len(want) == 120
    for g, w in zip(got, want):  # every column exactly but the probability, that to 2e-6
        g_cells, w_cells = g.split(","), w.split(",")
        assert g_cells[:-2] + g_cells[-1:] == w_cells[:-2] + w_cells[-1:]
        assert float(g_cells[-2]) == pytest.approx(float(w_cells[-2]), abs=2e-6)


def test_predict_on_ray_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, cluster,
                                                                  capsys: pytest.CaptureFixture[str]):
    inp = tmp_path / "bad.jsonl"
    inp.write_text('{"utterances": [["A", "hi"]]}\n{"utterances": [["B", "yo"]]}\n{"utterances": [\n',
                   encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", "meld", str(inp), "--out", str(out)]) == 2
    local_err = capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["predict", "--model", "meld", "--backend", "ray", str(inp), "--out", str(out), "--concurrency", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == local_err and local_err.startswith(f"error: {inp}:3: malformed JSON")
    assert not out.exists() and list(tmp_path.iterdir()) == [inp]

"""Recognizer API and ``iein predict`` on real MELD dialogues with a tiny model trained here."""
from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iein.checkpoint import LoadedModel, save_checkpoint
from iein.cli import main
from iein.data.conversation import Conversation, Corpus, Utterance
from iein.data.generic import write_conversations
from iein.errors import CheckpointError, DataError, IeinError
from iein.evaluation.evaluate import predict_steps
from iein.data.batching import encode_with
from iein.encoders.glove_bigru import GloveBiGRU, GloveBiGRUConfig
from iein.models.iein import IEIN, IEINConfig
from iein.output_formats import format_trace
from iein.recognizer import MAX_UTTERANCE_CHARS, Recognizer
from iein.training.config import TrainConfig
from iein.training.experiment import ExperimentConfig
from iein.training.trainer import prepare, train

TINY = ExperimentConfig("generic", "iein", "glove-bigru", model=dict(emotion_dim=4, iterations=2),
                        encoder_config=dict(hidden=8), train=TrainConfig(max_epochs=1, threads=1, seed=0))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def meld(shared_data: Path) -> Corpus:
    from iein.data.registry import load_corpus

    return load_corpus("meld", shared_data / "meld")


@pytest.fixture(scope="module")
def ckpt(meld: Corpus, tmp_path_factory) -> Path:
    small = Corpus(meld.name, meld.labels, {"train": meld["train"][:30], "dev": meld["dev"][:8], "test": []})
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    train(prepare(small, log=lambda _: None), TINY, out=path, log=lambda _: None, evaluate_test=False)
    return path


@pytest.fixture(scope="module")
def rec(ckpt: Path) -> Recognizer:
    return Recognizer.load(ckpt)


@pytest.fixture(scope="module")
def dialogues(meld: Corpus) -> list[Conversation]:
    return meld["test"][:20]


def reference(rec: Recognizer, convs: list[Conversation]) -> list[np.ndarray]:
    """The evaluation path's probabilities, (steps, n, labels) per conversation."""
    feat = rec.checkpoints[0].featurizer
    return [p.probs for p in predict_steps(rec.model, [encode_with(c, feat.featurize(c), None) for c in convs])]


def assert_same_results(a: list[list[dict]], b: list[list[dict]]) -> None:
    """Equal up to float noise of batching: same texts and labels, probabilities within 1e-5."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert [{k: v for k, v in o.items() if k != "probs"} for o in x] == [
            {k: v for k, v in o.items() if k != "probs"} for o in y]
        for o, p in zip(x, y):
            assert o["probs"] == pytest.approx(p["probs"], abs=1e-5)


def assert_same_labels(probs: np.ndarray, step_labels: list[list[str]], labels) -> None:
    """Step labels equal the per-step argmax (ignoring exact ties within float noise)."""
    top2 = np.sort(probs, axis=-1)[..., -2:]
    for s in range(probs.shape[0]):
        for j in range(probs.shape[1]):
            if top2[s, j, 1] - top2[s, j, 0] > 1e-5:
                assert step_labels[j][s] == labels[int(probs[s, j].argmax())]


# --- API ----------------------------------------------------------------------------------

def test_predict_equals_per_step_argmax_of_the_evaluation_path(rec, dialogues):
    ref = reference(rec, dialogues)
    for conv, probs in zip(dialogues, ref):
        out = rec.predict(conv)
        assert [o["speaker"] for o in out] == [u.speaker for u in conv.utterances]
        assert [o["text"] for o in out] == [u.text for u in conv.utterances]
        assert [o["gold"] for o in out] == [u.label for u in conv.utterances]
        assert all(len(o["steps"]) == rec.steps == 3 and o["label"] == o["steps"][-1] for o in out)
        got = np.array([[o["probs"][lab] for lab in rec.labels] for o in out])
        np.testing.assert_allclose(got, probs[-1], atol=1e-5)
        assert_same_labels(probs, [o["steps"] for o in out], rec.labels)


def test_input_forms_give_the_same_result(rec, dialogues):
    conv = dialogues[0]
    dicts = [{"speaker": u.speaker, "text": u.text} for u in conv.utterances]
    pairs = [(u.speaker, u.text) for u in conv.utterances]
    strip = lambda res: [{k: v for k, v in o.items() if k != "gold"} for o in res]  # noqa: E731
    expected = rec.predict(dicts)
    assert rec.predict(pairs) == expected
    assert rec.predict(tuple(pairs)) == expected
    assert rec.predict(iter(pairs)) == expected
    assert rec.predict({"id": "x", "utterances": dicts}) == expected
    assert strip(rec.predict(conv)) == expected


def test_predict_many_streams_in_order_and_equals_predict(rec, dialogues):
    pulled = []

    def source():
        for conv in dialogues:
            pulled.append(conv.id)
            yield conv

    it = rec.predict_many(source(), batch_size=3, max_batch_utterances=20)
    first = next(it)
    assert len(pulled) <= 4  # lazy: one batch (+ the item that closed it) was read
    results = [first, *it]
    assert_same_results(results, [rec.predict(c) for c in dialogues])
    assert list(rec.predict_many([])) == []


def test_no_label_variant_agrees_with_model_forward(rec, dialogues):
    # the recognizer's chunked forward must match IEIN.forward for every predicting variant
    vocab = rec.checkpoints[0].vocab
    for variant in ("no_label", "iein"):
        torch.manual_seed(0)
        cfg = IEINConfig(n_labels=7, emotion_dim=3, iterations=3, variant=variant)
        enc = GloveBiGRU(GloveBiGRUConfig(vocab_size=len(vocab), embedding_dim=50, hidden=6), rec.checkpoints[0].featurizer)
        other = Recognizer(LoadedModel(IEIN(cfg, enc).eval(), rec.labels, {}))
        assert other.steps == (4 if variant == "iein" else 2)
        for conv, probs in zip(dialogues[:8], reference(other, dialogues[:8])):
            out = other.predict(conv)
            np.testing.assert_allclose(np.array([[o["probs"][x] for x in other.labels] for o in out]), probs[-1],
                                       atol=1e-5)
            assert_same_labels(probs, [o["steps"] for o in out], other.labels)


def test_load_errors_and_card(rec, ckpt, tmp_path):
    with pytest.raises(IeinError, match=r"unknown model 'no-such-model'.*shipped models"):
        Recognizer.load("no-such-model")
    with pytest.raises(CheckpointError, match="not found"):
        Recognizer.load(tmp_path / "missing.safetensors")
    gold = tmp_path / "gold.safetensors"
    cfg = IEINConfig(n_labels=7, emotion_dim=2, variant="gold_label")
    enc = GloveBiGRU(GloveBiGRUConfig(vocab_size=len(rec.checkpoints[0].vocab), embedding_dim=50, hidden=4),
                     rec.checkpoints[0].featurizer)
    save_checkpoint(gold, IEIN(cfg, enc), rec.labels)
    with pytest.raises(CheckpointError, match="gold_label.*cannot label new conversations"):
        Recognizer.load(gold)

    card = rec.card
    assert "vocab" not in card and "featurizer" not in card and card["labels"] == list(rec.labels)
    assert card["encoder_config"]["hidden"] == 8 and card["vocab_size"] == len(rec.checkpoints[0].vocab)
    assert (card["model_type"], card["encoder_type"]) == ("iein", "glove-bigru")
    assert "model_card" not in card
    copy = tmp_path / "m.safetensors"
    copy.write_bytes(ckpt.read_bytes())
    (tmp_path / "m.card.json").write_text(json.dumps({"test_weighted_f1": 12.3}))
    assert Recognizer.load(copy).card["model_card"] == {"test_weighted_f1": 12.3}


@pytest.mark.parametrize(
    "conv, message",
    [
        ([], r"^conversation field 'utterances': empty"),
        ({"utterances": []}, r"^conversation field 'utterances': empty"),
        ([{"speaker": "A"}], r"^conversation utterance 0 field 'text': missing"),
        ([{"text": "hi"}], r"^conversation utterance 0 field 'speaker': missing"),
        ([("A", "hi"), ("", "yo")], r"^conversation utterance 1 field 'speaker': empty"),
        ([("A", None)], r"^conversation utterance 0 field 'text': must be a string"),
        ([{"speaker": "A", "text": "hi", "label": "happy"}],
         r"^conversation utterance 0 field 'label': unknown label 'happy'; this model's labels are neutral"),
        ("hello", r"^conversation: a conversation must be"),
        ([("A", "x" * (MAX_UTTERANCE_CHARS + 1))], r"^conversation utterance 0 field 'text': .*limit"),
    ],
)
def test_api_bad_input_names_the_field(rec, conv, message):
    with pytest.raises(DataError, match=message) as info:
        rec.predict(conv)
    assert "\n" not in str(info.value)


def test_predict_many_error_names_the_conversation(rec):
    with pytest.raises(DataError, match=r"^conversation\[1\] utterance 0 field 'speaker'"):
        list(rec.predict_many([[("A", "hi")], [{"text": "no speaker"}]]))
    with pytest.raises(IeinError, match="batch_size"):
        list(rec.predict_many([[("A", "hi")]], batch_size=0))


def test_huge_utterance_is_truncated_and_long_conversation_works(rec, meld):
    big = "so " * 33_333 + "x"  # 100,000 characters
    assert len(big) == 100_000
    out = rec.predict([("A", "Hi."), ("B", big), ("A", "Really?")])
    assert out[1]["text"] == big and out[1]["label"] in rec.labels
    # only the first MAX_WORDS tokens count: the same as the first 200 words
    assert rec.predict([("A", "Hi."), ("B", "so " * 200), ("A", "Really?")]) == [
        {**o, "text": t} for o, t in zip(out, ["Hi.", ("so " * 200).strip(), "Really?"])]

    texts = [u for c in meld["test"] for u in c.utterances]
    long_conv = [(u.speaker, u.text) for u in itertools.islice(itertools.cycle(texts), 5000)]
    res = rec.predict(long_conv)
    assert len(res) == 5000 and all(r["label"] in rec.labels for r in res)
    conv = Conversation("long", [Utterance(s, t) for s, t in long_conv])
    probs = reference(rec, [conv])[0]
    np.testing.assert_allclose(np.array([[r["probs"][x] for x in rec.labels] for r in res]), probs[-1], atol=1e-5)
    with pytest.raises(DataError, match="10001 utterances, more than the limit of 10000"):
        rec.predict(long_conv * 2 + [("A", "one too many")])


# --- CLI ------------------------------------------------------------------------------------

def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["predict", "--threads", "1", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_jsonl_roundtrip(rec, ckpt, dialogues, tmp_path, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_conversations(dialogues, src)
    rc, out, err = run_cli(["--model", str(ckpt), str(src), "--out", str(dst), "--batch-size", "4"], capsys)
    assert rc == 0 and out == "" and "20 conversations" in err
    lines = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in lines] == [c.id for c in dialogues]
    for rec_line, conv in zip(lines, dialogues):
        expected = rec.predict(conv)
        got = rec_line["utterances"]
        assert [(g["label"], g["steps"], g["gold"], g["text"]) for g in got] == [
            (e["label"], e["steps"], e["gold"], e["text"]) for e in expected]
        for g, e in zip(got, expected):
            assert g["probs"] == pytest.approx(e["probs"], abs=1e-6)

    # stdin (format sniffed) gives the same lines on stdout
    monkey_stdin = io.TextIOWrapper(io.BytesIO(src.read_bytes()), encoding="utf-8")
    old, sys.stdin = sys.stdin, monkey_stdin
    try:
        rc, out, err = run_cli(["--model", str(ckpt), "-", "--batch-size", "4"], capsys)
    finally:
        sys.stdin = old
    assert rc == 0 and out == dst.read_text(encoding="utf-8")


def test_cli_csv_roundtrip(rec, ckpt, dialogues, tmp_path, capsys):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    write_conversations(dialogues[:10], src)
    rc, out, err = run_cli(["--model", str(ckpt), str(src), "--out", str(dst)], capsys)
    assert rc == 0
    with open(dst, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["dialogue_id", "speaker", "text", "label", "gold", "step0", "step1", "step2", "prob",
                             "note"]
    expected = [(c.id, e) for c in dialogues[:10] for e in rec.predict(c)]
    assert len(rows) == len(expected)
    for row, (cid, e) in zip(rows, expected):
        assert (row["dialogue_id"], row["speaker"], row["text"], row["label"], row["gold"]) == (
            cid, e["speaker"], e["text"], e["label"], e["gold"])
        assert row["note"] == ""  # no empty texts in these dialogues
        assert [row[f"step{s}"] for s in range(3)] == e["steps"]
        assert float(row["prob"]) == pytest.approx(e["probs"][e["label"]], abs=1e-6)
    # --format csv to stdout, from JSONL input
    write_conversations(dialogues[:10], tmp_path / "in.jsonl")
    rc, out, _ = run_cli(["--model", str(ckpt), str(tmp_path / "in.jsonl"), "--format", "csv"], capsys)
    assert rc == 0 and out == dst.read_text(encoding="utf-8")


def test_cli_trace_shows_step_labels_and_marks_changes(rec, ckpt, dialogues, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    write_conversations(dialogues[:6], src)
    rc, out, _ = run_cli(["--model", str(ckpt), str(src), "--trace"], capsys)
    assert rc == 0 and "\033[" not in out  # not a terminal: no ANSI codes
    blocks = [b for b in out.strip().split("\n\n")]
    assert len(blocks) == 6
    n_changes = 0
    for block, conv in zip(blocks, dialogues[:6]):
        title, header, *rows = block.splitlines()
        assert title.startswith(f"conversation {conv.id} ")
        assert re.split(r"\s{2,}", header) == ["No.", "Speaker", "Utterance", "Step=0", "Step=1", "Step=2", "Gold"]
        expected = rec.predict(conv)
        assert len(rows) == len(expected)
        for row, e in zip(rows, expected):
            cells = re.split(r"\s{2,}", row)
            steps = cells[3:6]
            marks = [s > 0 and e["steps"][s] != e["steps"][s - 1] for s in range(3)]
            n_changes += sum(marks)
            assert steps == [lab + ("*" if m else "") for lab, m in zip(e["steps"], marks)]
            assert cells[6] == e["gold"]
    assert n_changes > 0  # the tiny model does revise labels, so marking is exercised

    # on a terminal the changed cells are bold/coloured instead of starred
    pred = next(rec.iter_predictions([dialogues[0]]))
    coloured = format_trace(pred, color=True)
    changed = sum(1 for s in range(1, 3) for j in range(len(dialogues[0]))
                  if pred.step_ids[s, j] != pred.step_ids[s - 1, j])
    assert coloured.count("\033[1;33m") == changed and "*" not in coloured.split("\n", 1)[1]


def test_cli_long_inputs_work(ckpt, meld, tmp_path, capsys):
    texts = [u for c in meld["test"] for u in c.utterances]
    long_conv = Conversation("long", [Utterance(u.speaker, u.text) for u in itertools.islice(itertools.cycle(texts), 5000)])
    huge = Conversation("huge", [Utterance("A", "word " * 20_000)])  # 100,000 characters
    src, dst = tmp_path / "long.csv", tmp_path / "long.out.csv"
    write_conversations([long_conv, huge], src)
    rc, _, err = run_cli(["--model", str(ckpt), str(src), "--out", str(dst)], capsys)
    assert rc == 0, err
    with open(dst, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5001 and rows[-1]["dialogue_id"] == "huge" and len(rows[-1]["text"]) == 99_999


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", '{"utterances": [["A", "hi"]]}\n{"id": "e", "utterances": []}\n',
         r"empty\.jsonl:2 field 'utterances': empty"),
        ("nospeaker.jsonl", '{"utterances": [{"text": "hi"}]}\n', r"nospeaker\.jsonl:1 utterance 0 field 'speaker': missing"),
        ("notext.jsonl", '{"utterances": [{"speaker": "A", "text": "hi"}]}\n{"utterances": [{"speaker": "A"}]}\n',
         r"notext\.jsonl:2 utterance 0 field 'text': missing"),
        ("nospeaker.csv", "dialogue_id,speaker,text\nd1,A,hi\nd1,,hello\n", r"nospeaker\.csv:3 field 'speaker': empty"),
        ("notext.csv", "dialogue_id,speaker\nd1,A\n", r"notext\.csv:1: missing column 'text'"),
        ("latin1.jsonl", b'{"utterances": [["A", "hi"]]}\n{"utterances": [["A", "caf\xe9 \x92"]]}\n',
         r"latin1\.jsonl:2: not valid UTF-8"),
        ("label.jsonl", '{"id": "c1", "utterances": [{"speaker": "A", "text": "hi", "label": "happy"}]}\n',
         r"label\.jsonl: conversation 'c1' utterance 0 field 'label': unknown label 'happy'"),
        ("badjson.jsonl", '{"utterances": [["A", "hi"]]}\n{"utterances": [\n', r"badjson\.jsonl:2: malformed JSON"),
        ("toolong.jsonl", json.dumps({"utterances": [["A", "x" * (MAX_UTTERANCE_CHARS + 1)]]}) + "\n",
         r"toolong\.jsonl:1 utterance 0 field 'text': 1000001 characters"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(ckpt, tmp_path, capsys, name, content, message):
    src, dst = tmp_path / name, tmp_path / "out.jsonl"
    (src.write_bytes if isinstance(content, bytes) else src.write_text)(content)
    rc, out, err = run_cli(["--model", str(ckpt), str(src), "--out", str(dst)], capsys)
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err
    assert not dst.exists() and list(tmp_path.glob(".out.jsonl*")) == []  # atomic: no partial output


def test_cli_model_errors(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('[["A", "hi"]]\n')
    rc, _, err = run_cli(["--model", "no-such-model", str(src)], capsys)
    assert rc == 2 and "unknown model 'no-such-model'" in err
    rc, _, err = run_cli(["--model", str(tmp_path / "x.safetensors"), str(src)], capsys)
    assert rc == 2 and "not found" in err

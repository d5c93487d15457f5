"""User corpora: JSONL/JSON/CSV reading, validation messages, streaming, round trips."""
from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import pytest

from iein.data.conversation import Conversation, Corpus, Utterance
from iein.data.generic import (
    check_labels,
    conversation_from_obj,
    iter_conversations,
    read_conversations,
    write_conversations,
)
from iein.data.meld import read_meld
from iein.data.registry import load_corpus
from iein.errors import DataError


@pytest.fixture(scope="session")
def meld_corpus(shared_data: Path) -> Corpus:
    return read_meld(shared_data / "meld")


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def error(path: Path, **kwargs: object) -> str:
    with pytest.raises(DataError) as err:
        read_conversations(path, **kwargs)  # type: ignore[arg-type]
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def jsonl(*objs: object) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


GOOD = {"id": "c1", "utterances": [{"speaker": "A", "text": "Hi!", "label": "joy"},
                                   {"speaker": "B", "text": " ", "label": None}]}


# --- JSONL --------------------------------------------------------------------------------

def test_jsonl_reads_ids_labels_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "talk.jsonl", jsonl(GOOD) + "\n" + jsonl({"utterances": [["A", "yo"]]}))
    c1, c2 = read_conversations(path)
    assert c1 == Conversation("c1", [Utterance("A", "Hi!", "joy"), Utterance("B", "", None)])
    assert c2 == Conversation("talk:3", [Utterance("A", "yo", None)])  # blank line 2 skipped


JSONL_ERRORS = [
    ("{not json}\n", ":2: malformed JSON"),
    ("42\n", ":2: a conversation must be an object"),
    ('{"id": "x"}\n', ":2 field 'utterances': missing"),
    ('{"utterances": []}\n', ":2 field 'utterances': empty"),
    ('{"utterances": {"speaker": "A"}}\n', ":2 field 'utterances': must be a list"),
    ('{"utterances": [{"text": "hi"}]}\n', ":2 utterance 0 field 'speaker': missing"),
    ('{"utterances": [{"speaker": "A", "text": "ok"}, {"speaker": "B"}]}\n', ":2 utterance 1 field 'text': missing"),
    ('{"utterances": [{"speaker": 1, "text": "hi"}]}\n', ":2 utterance 0 field 'speaker': must be a string, got int"),
    ('{"utterances": [{"speaker": "A", "text": null}]}\n', ":2 utterance 0 field 'text': must be a string, got null"),
    ('{"utterances": [{"speaker": "  ", "text": "hi"}]}\n', ":2 utterance 0 field 'speaker': empty"),
    ('{"utterances": [{"speaker": "A", "text": "hi", "label": 3}]}\n', ":2 utterance 0 field 'label': must be a string"),
    ('{"utterances": [{"speaker": "A", "text": "hi", "label": ""}]}\n', ":2 utterance 0 field 'label': empty"),
    ('{"utterances": ["hi"]}\n', ":2 utterance 0: an utterance must be an object"),
    ('{"id": ["x"], "utterances": [["A", "hi"]]}\n', ":2 field 'id': must be a string, got list"),
    ('{"id": "c1", "utterances": [["A", "hi"]]}\n', ":2 field 'id': duplicate id 'c1'"),
]


@pytest.mark.parametrize("line,expected", JSONL_ERRORS)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path / "in.jsonl", jsonl(GOOD) + line)
    assert f"{path}{expected}" in error(path)


def test_jsonl_limits(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", jsonl(GOOD, {"utterances": [["A", "x" * 11]]}))
    assert f"{path}:2 utterance 0 field 'text': 11 characters, more than the limit of 10" in error(
        path, max_utterance_chars=10)
    path = write(tmp_path / "in.jsonl", jsonl({"utterances": [["A", "a"]] * 3}))
    assert f"{path}:1 field 'utterances': 3 utterances, more than the limit of 2" in error(
        path, max_utterances=2)


def test_default_limits(tmp_path: Path) -> None:
    long = write(tmp_path / "long.jsonl", jsonl({"utterances": [["A", "x" * 1_000_001]]}))
    assert "limit of 1000000" in error(long)
    many = write(tmp_path / "many.jsonl", jsonl({"utterances": [["A", "x"]] * 10_001}))
    assert "limit of 10000" in error(many)


def test_non_utf8_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", jsonl(GOOD).encode() + b'{"utterances": [["A", "caf\xe9"]]}\n')
    assert f"{path}:2: not valid UTF-8" in error(path)
    path = write(tmp_path / "in.csv", b"dialogue_id,speaker,text\nd,A,ok\nd,B,\x93hi\x94\n")
    assert f"{path}:3: not valid UTF-8" in error(path)


def test_streaming_yields_before_a_later_error(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", jsonl(GOOD) + "oops\n")
    it = iter_conversations(path)
    assert isinstance(it, types.GeneratorType)
    assert next(it).id == "c1"
    with pytest.raises(DataError, match=":2: malformed JSON"):
        next(it)


# --- CSV ----------------------------------------------------------------------------------

def test_csv_runs_of_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv",
                 "dialogue_id,speaker,text,label\nd1,A,hi,joy\nd1,B,\"well, \"\"no\"\"\",\n\nd2,A,,anger\n")
    d1, d2 = read_conversations(path)
    assert d1 == Conversation("d1", [Utterance("A", "hi", "joy"), Utterance("B", 'well, "no"', None)])
    assert d2 == Conversation("d2", [Utterance("A", "", "anger")])


CSV_ERRORS = [
    ("dialogue_id,text\nd,hi\n", ":1: missing column 'speaker'"),
    ("dialogue_id,speaker,text\nd1,A,hi\nd2,A,hi\nd1,B,back\n", ":4 field 'dialogue_id': dialogue 'd1' reappears"),
    ("dialogue_id,speaker,text\nd1,A,hi,extra\n", ":2: 4 fields, but the header has 3"),
    ("dialogue_id,speaker,text\nd1,,hi\n", ":2 field 'speaker': empty"),
    ("dialogue_id,speaker,text\n,A,hi\n", ":2 field 'dialogue_id': empty"),
    ("dialogue_id,speaker,text\nd1,A,hi\nd1,B,\"multi\nline\"\nd1,,x\n", ":5 field 'speaker': empty"),
]


@pytest.mark.parametrize("content,expected", CSV_ERRORS)
def test_csv_errors_name_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "in.csv", content)
    assert f"{path}{expected}" in error(path)


def test_csv_limits(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", "dialogue_id,speaker,text\nd,A,a\nd,B,b\nd,A,c\n")
    assert f"{path}:4: dialogue 'd' has more than the limit of 2 utterances" in error(path, max_utterances=2)
    path = write(tmp_path / "in.csv", "dialogue_id,speaker,text\nd,A,abcdef\n")
    assert f"{path}:2 field 'text': 6 characters" in error(path, max_utterance_chars=5)


# --- formats, streams, stdin --------------------------------------------------------------

def test_format_detection(tmp_path: Path) -> None:
    path = write(tmp_path / "data.txt", jsonl(GOOD))
    assert "cannot tell the format" in error(path)
    assert read_conversations(path, fmt="jsonl")[0].id == "c1"
    with pytest.raises(DataError, match="unknown format 'xml'"):
        read_conversations(path, fmt="xml")
    with pytest.raises(DataError, match="cannot open"):
        read_conversations(tmp_path / "missing.jsonl")


def test_json_document(tmp_path: Path) -> None:
    convs = [GOOD, [{"speaker": "A", "text": "x"}]]
    path = write(tmp_path / "doc.json", json.dumps(convs, indent=2))
    c1, c2 = read_conversations(path)
    assert c1.id == "c1" and c2.id == "doc:1"
    assert read_conversations(write(tmp_path / "one.json", json.dumps(GOOD)))[0].id == "c1"
    lines = write(tmp_path / "lines.json", jsonl(GOOD, [["A", "b"]]))
    assert [c.id for c in read_conversations(lines)] == ["c1", "lines:2"]
    assert read_conversations(write(tmp_path / "empty.json", "")) == []
    assert "doc.json[1] utterance 0 field 'text': missing" in error(
        write(tmp_path / "doc.json", json.dumps([GOOD, [{"speaker": "A"}]], indent=1)))
    assert "bad.json:3: malformed JSON" in error(write(tmp_path / "bad.json", '[\n{"a": 1},\n}'))


def test_streams_and_stdin_sniff_the_format(monkeypatch: pytest.MonkeyPatch) -> None:
    text = io.StringIO(jsonl(GOOD))
    assert read_conversations(text)[0].id == "c1"
    data = "dialogue_id,speaker,text\nd,A,hi\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert read_conversations("-") == [Conversation("d", [Utterance("A", "hi")])]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n" + jsonl([["A", "x"]]).encode())))
    conv, = read_conversations("-")
    assert conv.id == "stdin:2"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{oops\n")))
    with pytest.raises(DataError, match=r"^<stdin>:1: malformed JSON"):
        read_conversations("-")


# --- conversation_from_obj (shared with the API and the HTTP service) ---------------------

def test_conversation_from_obj_forms() -> None:
    pairs = conversation_from_obj([["A", "hi"], ["B", "yo", "joy"]], "request[0]")
    assert pairs == Conversation("request[0]", [Utterance("A", "hi"), Utterance("B", "yo", "joy")])
    dicts = conversation_from_obj([{"speaker": "A", "text": " hi "}], "req", default_id="c9")
    assert dicts == Conversation("c9", [Utterance("A", "hi")])
    assert conversation_from_obj({"id": 7, "utterances": [["A", "x"]]}, "req").id == "7"
    with pytest.raises(DataError, match=r"^request\[1\] utterance 0: an utterance must be"):
        conversation_from_obj([["A"]], "request[1]")
    with pytest.raises(DataError, match=r"^req: a conversation must be an object .* got str"):
        conversation_from_obj("hello", "req")


# --- labels -------------------------------------------------------------------------------

def test_check_labels_names_conversation_and_utterance() -> None:
    convs = [Conversation("a", [Utterance("A", "x", "joy")]),
             Conversation("b", [Utterance("A", "x", None), Utterance("B", "y", "happpy")])]
    check_labels(convs[:1], ("joy",), "dev.jsonl")
    with pytest.raises(DataError) as err:
        check_labels(convs, ("joy", "anger"), "dev.jsonl")
    assert str(err.value) == ("dev.jsonl: conversation 'b' utterance 1: unknown label 'happpy' "
                              "(known: joy, anger)")


def test_load_corpus_user_files(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", jsonl(
        {"id": "t1", "utterances": [["A", "hi", "neutral"], ["B", "yay", "joy"]]},
        {"id": "t2", "utterances": [["A", "grr", "anger"]]}))
    write(tmp_path / "validation.csv", "dialogue_id,speaker,text,label\nv1,A,hm,joy\n")
    write(tmp_path / "test.jsonl", jsonl({"id": "x", "utterances": [["A", "?"]]}))
    corpus = load_corpus(tmp_path)
    assert corpus.name == tmp_path.name
    assert corpus.labels == ("neutral", "joy", "anger")  # first appearance in train
    assert [corpus.stats(s) for s in ("train", "dev", "test")] == [(2, 3), (1, 1), (1, 1)]

    explicit = load_corpus("mine", train=tmp_path / "train.jsonl", labels=("joy", "anger", "neutral"))
    assert explicit.name == "mine" and explicit.labels == ("joy", "anger", "neutral")
    assert explicit["dev"] == [] and explicit["test"] == []
    only_test = load_corpus("eval", test=tmp_path / "test.jsonl", labels=("joy",))
    assert only_test.stats("test") == (1, 1)

    write(tmp_path / "bad_dev.csv", "dialogue_id,speaker,text,label\nv1,A,hm,happpy\n")
    with pytest.raises(DataError, match=r"bad_dev.csv: conversation 'v1' utterance 0: unknown label 'happpy'"):
        load_corpus("mine", train=tmp_path / "train.jsonl", dev=tmp_path / "bad_dev.csv")
    with pytest.raises(DataError, match=r"test.jsonl: conversation 'x' utterance 0: no label"):
        load_corpus("mine", train=tmp_path / "test.jsonl")
    with pytest.raises(DataError, match="labels must be given"):
        load_corpus("eval", test=tmp_path / "test.jsonl")
    with pytest.raises(DataError, match="not a dataset"):
        load_corpus(tmp_path / "nothing-here")
    write(tmp_path / "train.csv", "dialogue_id,speaker,text,label\n")
    with pytest.raises(DataError, match="several train files"):
        load_corpus(tmp_path)


# --- round trips --------------------------------------------------------------------------

TRICKY = [
    Conversation("c,1", [Utterance("A", 'say "hi", ok?', "joy"), Utterance("B b", "", None),
                         Utterance("A", "two\nlines — “quoted” ’ 😀", "anger")]),
    Conversation("c2", [Utterance("Ross and Joey", "x", "joy")]),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_round_trip_tricky(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    write_conversations(TRICKY, path)
    assert read_conversations(path) == TRICKY


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_round_trip_meld(tmp_path: Path, meld_corpus: Corpus, suffix: str) -> None:
    convs = meld_corpus["dev"]
    path = tmp_path / f"dev{suffix}"
    write_conversations(convs, path)
    assert read_conversations(path) == convs
    stream = io.StringIO()
    write_conversations(convs, stream, fmt=suffix[1:])
    stream.seek(0)
    assert read_conversations(stream, fmt=suffix[1:]) == convs


@pytest.mark.parametrize("command", ["predict", "train", "evaluate"])
def test_lone_surrogate_is_one_line_in_every_command(tmp_path, capsys, command):
    from iein.cli import main

    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "d1", "utterances": [{"speaker": "Ann", "text": "hi \\ud800", "label": "joy"}, '
                    '{"speaker": "Bob", "text": "ok", "label": "neutral"}]}\n', encoding="utf-8")
    argv = {"predict": ["predict", "--model", "meld", str(path)],
            "train": ["train", "--train", str(path), "--dev", str(path), "--epochs", "1",
                      "--out", str(tmp_path / "m.safetensors")],
            "evaluate": ["evaluate", "--model", "meld", "--test", str(path)]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {path}:1 utterance 0 field 'text': not valid Unicode text (a lone surrogate " \
                      "'\\ud800' at character 3)"
    assert not any("Traceback" in line for line in err)

"""What the commands write: counts in the right number, JSON errors at the right column, CSV
output that keeps the gold label, a service that rounds and reports like the CLI, and a
failed download that leaves no empty folder.

Every failure is checked through the CLI (``iein.cli.main``) or the service (TestClient):
one ``error:`` line, no traceback, nothing overwritten, nothing left behind."""
from __future__ import annotations

import csv
import json
import shutil
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from iein.cli import main
from iein.data.conversation import Conversation, Utterance
from iein.output_formats import EMPTY_TEXT_NOTE, OUTPUT_DIGITS, format_trace
from iein.recognizer import ConversationPrediction, Recognizer
from iein.utils import plural

torch.set_num_threads(1)

LABELS = ("neutral", "joy", "anger")
WORDS = ["we", "won", "no", "way", "great", "hm", "really", "yes"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained IEIN (T = 2) on a GloVe-BiGRU encoder: real weights, built in a second."""
    from iein.checkpoint import save_checkpoint
    from iein.encoders.glove import WordFeaturizer
    from iein.encoders.glove_bigru import GloveBiGRU, GloveBiGRUConfig
    from iein.models.iein import IEIN, IEINConfig
    from iein.text.vocab import Vocab

    torch.manual_seed(0)
    feat = WordFeaturizer(Vocab(["<pad>", "<unk>", *WORDS]))
    enc = GloveBiGRU(GloveBiGRUConfig(vocab_size=len(WORDS) + 2, embedding_dim=8, hidden=4), feat)
    model = IEIN(IEINConfig(n_labels=len(LABELS), emotion_dim=4, iterations=2), enc)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, LABELS)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    """The single ``error:`` line of a failed command (and no traceback)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# --- 8. counts in the right number --------------------------------------------------------

def test_plural() -> None:
    assert plural(1, "conversation") == "1 conversation"
    assert plural(0, "conversation") == "0 conversations"
    assert plural(2, "label change") == "2 label changes"
    assert plural(1, "worker process", "worker processes") == "1 worker process"
    assert plural(3, "worker process", "worker processes") == "3 worker processes"


@pytest.mark.parametrize("convs, expected", [
    ([[("A", "we won")]], "1 conversation, 1 utterance ->"),
    ([[("A", "we won"), ("B", "no way")], [("A", "hm")]], "2 conversations, 3 utterances ->"),
])
def test_predict_summary_counts(ckpt: Path, tmp_path: Path, capsys, convs, expected: str) -> None:
    src = write(tmp_path / "in.jsonl", "".join(
        json.dumps({"utterances": [{"speaker": s, "text": t} for s, t in c]}) + "\n" for c in convs))
    rc, out, err = run(["predict", "--model", str(ckpt), str(src), "--out", str(tmp_path / "o.jsonl")], capsys)
    assert rc == 0 and out == ""
    assert expected in err
    assert "1 conversations" not in err and "1 utterances" not in err


def test_trace_title_counts() -> None:
    conv = Conversation("c", [Utterance("A", "we won")])
    # step labels neutral -> joy -> joy: one change
    probs = np.array([[[0.8, 0.1, 0.1]], [[0.1, 0.8, 0.1]], [[0.1, 0.8, 0.1]]], dtype=np.float32)
    title = format_trace(ConversationPrediction(conv, probs, LABELS)).splitlines()[0]
    assert title == "conversation c (1 utterance, 1 label change marked *)"
    two = Conversation("d", [Utterance("A", "we"), Utterance("B", "won")])
    flat = np.full((3, 2, 3), 1 / 3, dtype=np.float32)
    flat[:, :, 0] += 0.1
    title = format_trace(ConversationPrediction(two, flat, LABELS), color=True).splitlines()[0]
    assert title == "conversation d (2 utterances, 0 label changes highlighted)"


def test_data_stats_counts(tmp_path: Path, capsys) -> None:
    train = write(tmp_path / "train.csv", "dialogue_id,speaker,text,label\nd1,A,hi,joy\nd1,B,ho,joy\nd2,A,x,neutral\n")
    dev = write(tmp_path / "dev.csv", "dialogue_id,speaker,text,label\nd1,A,hi,joy\n")
    rc, out, _ = run(["data", "stats", "--train", str(train), "--dev", str(dev)], capsys)
    assert rc == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert " 1 dialogue " in lines["dev"] and " 1 utterance " in lines["dev"]
    assert " 2 dialogues " in lines["train"] and " 3 utterances " in lines["train"]
    # the counts still line up in columns
    assert lines["dev"].index("|") == lines["train"].index("|")


def test_csv_row_with_one_field(tmp_path: Path, capsys) -> None:
    bad = write(tmp_path / "bad.csv", "dialogue_id,speaker,text,label\nd1\n")
    rc, _, err = run(["data", "stats", "--train", str(bad), "--dev", str(bad)], capsys)
    assert rc == 2
    assert one_error_line(err) == f"error: {bad}:2: 1 field, but the header has 4"


# --- 8. JSON errors at the real line and column -------------------------------------------

@pytest.mark.parametrize("name, content, where", [
    # line 1 breaks off at column 17 (the newline is not where the error is)
    ("cut.jsonl", '{"utterances": [\n', "1: malformed JSON: Expecting value (column 17)"),
    ("cut_crlf.jsonl", '{"utterances": [\r\n', "1: malformed JSON: Expecting value (column 17)"),
    ("third.jsonl", '{"utterances": [["A", "we"]]}\n\n{"utterances": [["A", "we"] ["B", "no"]]}\n',
     "3: malformed JSON: Expecting ',' delimiter (column 29)"),
    ("cut.json", '{"utterances": [\n\n', "1: malformed JSON: Expecting value (column 17)"),
    ("doc.json", '[\n  {"utterances": [["A", "we"]]},\n  {"utterances": [["A" "we"]]}\n]\n',
     "3: malformed JSON: Expecting ',' delimiter (column 24)"),
])
def test_json_error_line_and_column(ckpt: Path, tmp_path: Path, capsys, name: str, content: str, where: str) -> None:
    src = write(tmp_path / name, content)
    out = write(tmp_path / "labelled.jsonl", "precious earlier output\n")
    before = listing(tmp_path)
    rc, stdout, err = run(["predict", "--model", str(ckpt), str(src), "--out", str(out)], capsys)
    assert rc == 2 and stdout == ""
    assert one_error_line(err) == f"error: {src}:{where}"
    assert listing(tmp_path) == before  # --out not overwritten, no temporary left


def test_json_column_is_where_the_line_breaks(tmp_path: Path) -> None:
    """The reported column, counted on the file's line, points at the break."""
    from iein.data.generic import read_conversations
    from iein.errors import DataError

    line = '{"utterances": ['
    src = write(tmp_path / "x.jsonl", line + "\n")
    with pytest.raises(DataError, match=r"\(column (\d+)\)") as exc:
        read_conversations(src)
    column = int(str(exc.value).rsplit("column ", 1)[1].rstrip(")"))
    assert column == len(line) + 1 == 17


# --- 9. predict's CSV keeps the gold label; the service agrees with the CLI ---------------

LABELLED_CSV = (
    "dialogue_id,speaker,text,label\n"
    "d1,Ann,We won!,joy\n"
    "d1,Bob,No way.,\n"       # unlabelled
    "d1,Ann,   ,neutral\n"    # whitespace-only text
    "d2,Cy,Really?,anger\n"
)


def test_csv_output_keeps_gold_beside_prediction(ckpt: Path, tmp_path: Path, capsys) -> None:
    src = write(tmp_path / "in.csv", LABELLED_CSV)
    rc, _, err = run(["predict", "--model", str(ckpt), str(src), "--out", str(tmp_path / "out.csv")], capsys)
    assert rc == 0, err
    with open(tmp_path / "out.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["dialogue_id", "speaker", "text", "label", "gold", "step0", "step1", "step2",
                             "prob", "note"]
    assert [r["gold"] for r in rows] == ["joy", "", "neutral", "anger"]
    rc, _, _ = run(["predict", "--model", str(ckpt), str(src), "--out", str(tmp_path / "out.jsonl")], capsys)
    assert rc == 0
    jsonl = [u for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
             for u in json.loads(line)["utterances"]]
    for row, utt in zip(rows, jsonl, strict=True):
        assert row["label"] == utt["label"] in LABELS  # the prediction, not the input's label
        assert row["gold"] == utt.get("gold", "")
        assert [row[f"step{s}"] for s in range(3)] == utt["steps"]
        assert float(row["prob"]) == utt["probs"][utt["label"]]  # rounded the same way
        assert row["note"] == utt.get("note", "")


def test_empty_text_note_in_cli_outputs(ckpt: Path, tmp_path: Path, capsys) -> None:
    src = write(tmp_path / "in.csv", LABELLED_CSV)
    rc, out, err = run(["predict", "--model", str(ckpt), str(src)], capsys)
    assert rc == 0
    utts = [u for line in out.splitlines() for u in json.loads(line)["utterances"]]
    assert [u.get("note") for u in utts] == [None, None, EMPTY_TEXT_NOTE, None]
    assert utts[2]["text"] == "" and utts[2]["label"] in LABELS
    assert "note: 1 utterance with empty text, labelled from context only" in err


# --- 9. the service ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(ckpt: Path):
    pytest.importorskip("fastapi", reason="needs the serve extra")
    pytest.importorskip("httpx", reason="the test client needs httpx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from iein.server import create_app

    with TestClient(create_app(Recognizer.load(ckpt))) as c:
        yield c


def service_error(r, code: str = "malformed_json") -> str:
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error", "message"} and body["error"] == code, body
    assert "\n" not in body["message"]
    return body["message"]


def test_service_answers_what_the_cli_writes(client, ckpt: Path, tmp_path: Path, capsys) -> None:
    conv = {"id": "c1", "utterances": [{"speaker": "Ann", "text": "We won!", "label": "joy"},
                                       {"speaker": "Bob", "text": " \t "},
                                       {"speaker": "Ann", "text": "Really? yes"}]}
    r = client.post("/predict", json=conv)
    assert r.status_code == 200, r.text
    served = r.json()["utterances"]
    src = write(tmp_path / "in.jsonl", json.dumps(conv) + "\n")
    rc, out, _ = run(["predict", "--model", str(ckpt), str(src)], capsys)
    assert rc == 0
    written = json.loads(out)["utterances"]
    assert served == written  # same labels, steps, gold, note, and the same rounded floats
    for utt in served:
        for p in utt["probs"].values():
            assert p == round(p, OUTPUT_DIGITS)
    assert any(len(repr(p).split(".")[-1]) > 2 for u in served for p in u["probs"].values())  # not trivially short
    assert [u.get("note") for u in served] == [None, EMPTY_TEXT_NOTE, None]


def test_service_invalid_utf8_is_malformed_json(client) -> None:
    raw = b'{"utterances": [{"speaker": "A", "text": "caf\xe9"}]}'
    at = raw.index(b"\xe9")
    message = service_error(client.post("/predict", content=raw, headers={"content-type": "application/json"}))
    assert message == f"malformed JSON at byte {at}: not valid UTF-8 (byte 0xe9)"


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"utterances": ' + b"[" * 5000 + b"]" * 5000 + b"}"])
def test_service_deep_nesting_is_malformed_json(client, raw: bytes) -> None:
    message = service_error(client.post("/predict", content=raw, headers={"content-type": "application/json"}))
    assert message == "malformed JSON: nested too deeply"


def test_service_keeps_its_other_errors(client) -> None:
    """The new parsing path changes nothing else: a syntax error keeps its position, a
    missing field is still a 422, an unsupported media type a 415."""
    message = service_error(client.post("/predict", content=b'{"utterances": [',
                                        headers={"content-type": "application/json"}))
    assert message == "malformed JSON at character 16: Expecting value"
    r = client.post("/predict", json={"utterances": [{"speaker": "A"}]})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = client.post("/predict", content=b"A: hi", headers={"content-type": "text/plain"})
    assert r.status_code == 415


# --- 10. a failed download leaves no empty folder ------------------------------------------

@pytest.fixture
def refused() -> str:
    """A loopback URL where nothing listens (connection refused: 'no network')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def download(dest: Path, base: str, capsys) -> tuple[int, str]:
    rc, out, err = run(["data", "download", "meld", "--dest", str(dest), "--base-url", base], capsys)
    return rc, err


def test_no_network_leaves_no_new_folder(tmp_path: Path, refused: str, capsys) -> None:
    dest = tmp_path / "cache" / "iein" / "meld"
    rc, err = download(dest, refused, capsys)
    assert rc == 2
    assert "download failed" in one_error_line(err)
    assert not (tmp_path / "cache").exists()  # every folder it made is gone again
    assert listing(tmp_path) == {}


def test_http_404_leaves_no_new_folder(tmp_path: Path, mirror: tuple[Path, str], capsys) -> None:
    dest = tmp_path / "data" / "meld"
    rc, err = download(dest, mirror[1], capsys)
    assert rc == 2
    assert "download failed: HTTP 404" in one_error_line(err)
    assert not (tmp_path / "data").exists()


def test_failed_download_keeps_existing_folders_and_files(tmp_path: Path, refused: str, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, err = download(empty, refused, capsys)
    assert rc == 2 and one_error_line(err)
    assert empty.is_dir() and listing(empty) == {}  # it existed before: kept

    parent = tmp_path / "parent"
    parent.mkdir()
    rc, err = download(parent / "meld", refused, capsys)
    assert rc == 2 and one_error_line(err)
    assert parent.is_dir() and not (parent / "meld").exists()  # only the folder it made is gone

    full = tmp_path / "full"
    full.mkdir()
    write(full / "notes.txt", "mine")
    rc, err = download(full, refused, capsys)
    assert rc == 2 and one_error_line(err)
    assert listing(full) == {"notes.txt": b"mine"}


def test_partial_download_keeps_its_verified_file(tmp_path: Path, mirror: tuple[Path, str],
                                                  shared_data: Path, capsys) -> None:
    from iein.data import download as dl

    root, base = mirror
    first, second = list(dl.SHA256["meld"])[:2]
    folder = root / "declare-lab/MELD/master/data/MELD"
    folder.mkdir(parents=True)
    shutil.copyfile(shared_data / "meld" / first, folder / first)  # the next one is a 404
    dest = tmp_path / "new" / "meld"
    rc, err = download(dest, base, capsys)
    assert rc == 2
    assert f"{second}: download failed: HTTP 404" in one_error_line(err)
    assert sorted(p.name for p in dest.iterdir()) == [first]  # verified, kept for the next try


def test_download_into_a_file_is_one_error_line(tmp_path: Path, refused: str, capsys) -> None:
    blocker = write(tmp_path / "meld", "a file, not a folder")
    rc, err = download(blocker, refused, capsys)
    assert rc == 2
    assert one_error_line(err).startswith(f"error: {blocker}: cannot create the folder")
    assert blocker.read_text() == "a file, not a folder"


def test_messages_point_the_right_way(tmp_path, capsys):
    """A folder as input, a gzip file, a pickled resume state: each one line that says what it is."""
    import gzip
    import pickle

    from iein.cli import main

    folder = tmp_path / "convs"
    folder.mkdir()
    assert main(["predict", "--model", "meld", str(folder)]) == 2
    assert "a folder, not a file" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["train", "--train", str(folder), "--dev", str(folder)]) == 2
    assert "--train " + str(folder) + ": a folder, not a file" in capsys.readouterr().err.strip().splitlines()[-1]
    packed = tmp_path / "dialogues.jsonl"
    packed.write_bytes(gzip.compress(b'{"utterances": [["A", "hi"]]}\n'))
    assert main(["predict", "--model", "meld", str(packed)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {packed}: a gzip file, not text: decompress it first"
    from iein.training.trainer import read_resume_state

    state = tmp_path / "run.resume.pt"
    state.write_bytes(pickle.dumps(Path("x")))  # a pickle torch refuses to load without code
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torch warning may come first
        with pytest.raises(Exception, match="pickled objects, which iein never loads") as info:
            read_resume_state(state)
    assert "\n" not in str(info.value)


def test_round_trips_keep_what_each_column_means(tiny_meld_checkpoint, shared_data, tmp_path, capsys):
    """predict's CSV read back takes ``gold`` as the gold label; evaluate refuses --labels that
    are not the model's; the same file as --train and --dev is warned about."""
    from iein.cli import main
    from iein.data.generic import read_conversations
    from iein.data.registry import load_corpus
    from tests.conftest import write_jsonl

    convs = load_corpus("meld", shared_data / "meld")["test"][:2]
    given = write_jsonl(tmp_path / "in.jsonl", convs)
    out = tmp_path / "out.csv"
    assert main(["predict", "--model", str(tiny_meld_checkpoint), str(given), "--out", str(out)]) == 0
    back = read_conversations(out)
    assert [u.label for c in back for u in c.utterances] == [u.label for c in convs for u in c.utterances]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tiny_meld_checkpoint), "--test", str(given), "--labels",
                 "joy,neutral,surprise,fear,sadness,disgust,anger"]) == 2
    assert "the model's labels are" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["train", "--train", str(given), "--dev", str(given), "--epochs", "1", "--threads", "1",
                 "--set", "encoder.hidden=4", "--set", "emotion_dim=2", "--out", str(tmp_path / "m.safetensors")]) == 0
    assert "warning: --dev is the --train file" in capsys.readouterr().err

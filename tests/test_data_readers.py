"""The MELD, IEMOCAP and DailyDialog readers against the real corpora and broken copies."""
from __future__ import annotations

import csv
import random
import zipfile
from pathlib import Path

import pytest

from iein.data import dailydialog, iemocap, meld
from iein.data.text_io import repair_mojibake
from iein.data.conversation import Corpus
from iein.data.registry import DATASETS, download_dir, load_corpus, resolve_data_dir
from iein.errors import DataError

# The table of /work/shared/data/README.md: (dialogues, utterances, per-label counts).
EXPECTED = {
    ("meld", "train"): (1038, 9989, {"neutral": 4710, "joy": 1743, "surprise": 1205, "anger": 1109,
                                     "sadness": 683, "disgust": 271, "fear": 268}),
    ("meld", "dev"): (114, 1109, {"neutral": 470, "joy": 163, "anger": 153, "surprise": 150,
                                  "sadness": 111, "fear": 40, "disgust": 22}),
    ("meld", "test"): (280, 2610, {"neutral": 1256, "joy": 402, "anger": 345, "surprise": 281,
                                   "sadness": 208, "disgust": 68, "fear": 50}),
    ("iemocap", "train"): (108, 5163, {"frustrated": 1296, "neutral": 1221, "angry": 831, "sad": 771,
                                       "excited": 593, "happy": 451}),
    ("iemocap", "dev"): (12, 647, {"frustrated": 172, "excited": 149, "neutral": 103, "angry": 102,
                                   "sad": 68, "happy": 53}),
    ("iemocap", "test"): (31, 1623, {"neutral": 384, "frustrated": 381, "excited": 299, "sad": 245,
                                     "angry": 170, "happy": 144}),
    ("dailydialog", "train"): (11118, 87170, {"no emotion": 72143, "happiness": 11182, "surprise": 1600,
                                              "sadness": 969, "anger": 827, "disgust": 303, "fear": 146}),
    # The README gives only the totals (and "no emotion") for the validation split.
    ("dailydialog", "dev"): (1000, 8069, {"no emotion": 7108}),
    ("dailydialog", "test"): (1000, 7740, {"no emotion": 6321, "happiness": 1019, "anger": 118,
                                           "surprise": 116, "sadness": 102, "disgust": 47, "fear": 17}),
}


@pytest.fixture(scope="session")
def corpora(shared_data: Path) -> dict[str, Corpus]:
    return {name: load_corpus(name, shared_data) for name in DATASETS}


@pytest.fixture(scope="session")
def iemocap_pickle(shared_data: Path) -> Corpus:
    return iemocap.read_iemocap_pickle(shared_data / "iemocap" / "raw" / "cosmic_iemocap.pkl")


def one_line(err: pytest.ExceptionInfo[DataError]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --- counts and label orders -------------------------------------------------------------

@pytest.mark.parametrize("name,split", sorted(EXPECTED))
def test_counts_match_readme(corpora: dict[str, Corpus], name: str, split: str) -> None:
    dialogues, utterances, labels = EXPECTED[name, split]
    corpus = corpora[name]
    assert corpus.stats(split) == (dialogues, utterances)
    counts = corpus.label_counts(split)
    assert sum(counts.values()) == utterances
    for label, n in labels.items():
        assert counts[label] == n, label
    if len(labels) == len(corpus.labels):
        assert dict(counts) == labels


def test_label_orders(corpora: dict[str, Corpus]) -> None:
    assert corpora["meld"].labels == ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
    assert corpora["iemocap"].labels == ("happy", "sad", "neutral", "angry", "excited", "frustrated")
    assert corpora["dailydialog"].labels == (
        "no emotion", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
    for corpus in corpora.values():
        assert set(corpus.splits) == {"train", "dev", "test"}


def test_dialogue_ids_unique_across_splits(corpora: dict[str, Corpus]) -> None:
    for corpus in corpora.values():
        ids = [c.id for split in corpus.splits.values() for c in split]
        assert len(ids) == len(set(ids)), corpus.name
    assert corpora["meld"]["train"][0].id == "train_0"
    assert corpora["dailydialog"]["dev"][0].id == "dev_0"


# --- MELD ---------------------------------------------------------------------------------

def test_meld_first_dialogue(corpora: dict[str, Corpus]) -> None:
    first = corpora["meld"]["train"][0]
    assert first.utterances[0].speaker == "Chandler"
    assert first.utterances[1].speaker == "The Interviewer"
    assert first.utterances[1].text == "You must’ve had your hands full."
    assert first.utterances[0].label == "neutral"
    # Dialogue 60 is missing from the public train CSV.
    ids = [c.id for c in corpora["meld"]["train"]]
    assert "train_60" not in ids and ids[59:61] == ["train_59", "train_61"]


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
               "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]


def _meld_row(text: str, dia: int, utt: object, emotion: str = "neutral") -> list[object]:
    return [1, text, "Ross", emotion, "neutral", dia, utt, 1, 1, "0:00:00,000", "0:00:01,000"]


def test_meld_orders_by_utterance_id_with_gaps(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "dev_sent_emo.csv", MELD_HEADER, [
        _meld_row("third", 3, 7), _meld_row("first", 3, 0), _meld_row("other", 1, 0),
        _meld_row("second", 3, 2),
    ])
    convs = meld.read_meld_split(path, "dev")
    assert [c.id for c in convs] == ["dev_1", "dev_3"]
    assert [u.text for u in convs[1].utterances] == ["first", "second", "third"]


def test_meld_shuffled_file_reads_the_same(
    shared_data: Path, corpora: dict[str, Corpus], tmp_path: Path
) -> None:
    original = shared_data / "meld" / "dev_sent_emo.csv"
    lines = original.read_text(encoding="utf-8").splitlines(keepends=True)
    body = lines[1:]
    random.Random(0).shuffle(body)
    shuffled = tmp_path / "dev_sent_emo.csv"
    shuffled.write_text(lines[0] + "".join(body), encoding="utf-8")
    assert meld.read_meld_split(shuffled, "dev") == corpora["meld"]["dev"]


@pytest.mark.parametrize("mangled,fixed", [
    ("Youâ€™re a genius!", "You’re a genius!"),
    ("You\x92re a genius!", "You’re a genius!"),
    ("â€œHiâ€\x9d â€” caf\u00c3\u00a9â€¦", "“Hi” — café…"),
    ("Â£5", "£5"),
])
def test_repair_mojibake(mangled: str, fixed: str) -> None:
    assert repair_mojibake(mangled) == fixed
    assert repair_mojibake(fixed) == fixed


def test_repair_mojibake_never_crashes_and_keeps_clean_text() -> None:
    for clean in ["Café — “ok”… naïve", "日本語 😀", "Ã", "â€", "\x81odd", "plain"]:
        assert repair_mojibake(clean) == clean
    rng = random.Random(1)
    alphabet = "âÃÂ€™\x92\x9d\x81éa œ”…ð\x9f˜"
    for _ in range(2000):
        repair_mojibake("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10))))


def test_meld_repairs_mangled_text_and_says_so(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "train_sent_emo.csv", MELD_HEADER, [
        _meld_row("Youâ€™re fine", 0, 0), _meld_row("It\x92s ok", 0, 1), _meld_row("clean", 0, 2),
    ])
    notes: list[str] = []
    conv, = meld.read_meld_split(path, "train", notes)
    assert [u.text for u in conv.utterances] == ["You’re fine", "It’s ok", "clean"]
    assert len(notes) == 1 and "2 utterance(s)" in notes[0] and "line 2" in notes[0]


def test_meld_non_utf8_file_names_file_and_line(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "dev_sent_emo.csv", MELD_HEADER,
                      [_meld_row("fine", 0, 0), _meld_row("Youre", 0, 1)])
    path.write_bytes(path.read_bytes().replace(b"Youre", b"You\x92re"))
    with pytest.raises(DataError) as err:
        meld.read_meld_split(path, "dev")
    assert f"{path}:3:" in one_line(err) and "UTF-8" in str(err.value)


def test_meld_missing_column(tmp_path: Path) -> None:
    header = [h for h in MELD_HEADER if h != "Emotion"]
    path = _write_csv(tmp_path / "dev_sent_emo.csv", header, [])
    with pytest.raises(DataError) as err:
        meld.read_meld_split(path, "dev")
    assert "'Emotion'" in one_line(err) and str(path) in str(err.value)


def test_meld_unknown_label_and_bad_ids(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "dev_sent_emo.csv", MELD_HEADER,
                      [_meld_row("a", 0, 0), _meld_row("b", 0, 1, emotion="happpy")])
    with pytest.raises(DataError) as err:
        meld.read_meld_split(path, "dev")
    assert f"{path}:3 field 'Emotion': unknown label 'happpy'" in one_line(err)

    path = _write_csv(tmp_path / "dev_sent_emo.csv", MELD_HEADER, [_meld_row("a", 0, "x")])
    with pytest.raises(DataError, match=r":2 field 'Utterance_ID': not an integer"):
        meld.read_meld_split(path, "dev")

    rows = [_meld_row("a", 0, 1), _meld_row("b", 0, 1)]
    path = _write_csv(tmp_path / "dev_sent_emo.csv", MELD_HEADER, rows)
    with pytest.raises(DataError, match=r":3: utterance 1 of dialogue '0' already given at line 2"):
        meld.read_meld_split(path, "dev")


# --- IEMOCAP ------------------------------------------------------------------------------

def test_iemocap_csv_and_pickle_identical(corpora: dict[str, Corpus], iemocap_pickle: Corpus) -> None:
    assert corpora["iemocap"] == iemocap_pickle
    conv = iemocap_pickle["train"][0]
    assert conv.id == "Ses03F_impro06"
    speakers = {u.speaker for split in iemocap_pickle.splits.values() for c in split for u in c.utterances}
    assert speakers == {"M", "F"}


def test_iemocap_pickle_only_directory(
    shared_data: Path, tmp_path: Path, iemocap_pickle: Corpus
) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "cosmic_iemocap.pkl").write_bytes(
        (shared_data / "iemocap" / "raw" / "cosmic_iemocap.pkl").read_bytes())
    assert iemocap.read_iemocap(tmp_path) == iemocap_pickle


def test_iemocap_label_id_must_match(tmp_path: Path) -> None:
    header = list(iemocap.COLUMNS)
    for split in iemocap.SPLITS:
        _write_csv(tmp_path / f"iemocap_{split}.csv", header, [["d1", 0, "M", "sad", 2, "hi"]])
    with pytest.raises(DataError) as err:
        iemocap.read_iemocap(tmp_path, source="csv")
    assert "iemocap_train.csv:2 field 'Label_ID'" in one_line(err)


def test_iemocap_malicious_pickle_refused(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "cosmic_iemocap.pkl").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(DataError) as err:
        iemocap.read_iemocap(tmp_path)
    assert "cosmic_iemocap.pkl" in one_line(err) and "system" in str(err.value)

    (tmp_path / "raw" / "cosmic_iemocap.pkl").write_bytes(pickle.dumps({"not": "a list"}))
    with pytest.raises(DataError, match="unexpected IEMOCAP pickle layout"):
        iemocap.read_iemocap(tmp_path)


# --- DailyDialog --------------------------------------------------------------------------

def test_dailydialog_mismatched_dialogue_noted(corpora: dict[str, Corpus]) -> None:
    dd = corpora["dailydialog"]
    conv = next(c for c in dd["train"] if c.id == "train_7851")
    assert len(conv) == 11 and conv.is_labelled
    assert len(dd.notes["train"]) == 1 and "train_7851" in dd.notes["train"][0]
    assert "12 utterances but 11 labels" in dd.notes["train"][0]
    assert dd.notes["dev"] == [] and dd.notes["test"] == []


def test_dailydialog_speakers_and_text(corpora: dict[str, Corpus]) -> None:
    first = corpora["dailydialog"]["train"][0]
    assert [u.speaker for u in first.utterances[:4]] == ["A", "B", "A", "B"]
    assert first.utterances[0].text == "Say , Jim , how about going for a few beers after dinner ?"
    assert all(u.text == u.text.strip() and "__eou__" not in u.text
               for c in corpora["dailydialog"]["test"] for u in c.utterances)


def _dd_zip(path: Path, split: str, dialogues: str, emotions: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{split}/dialogues_{split}.txt", dialogues)
        zf.writestr(f"{split}/dialogues_emotion_{split}.txt", emotions)
    return path


def test_dailydialog_count_mismatches_are_notes(tmp_path: Path) -> None:
    path = _dd_zip(tmp_path / "dd_test.zip", "test",
                   "a __eou__ b __eou__ c __eou__\nd __eou__\ne __eou__ f __eou__\n",
                   "0 4\n1 2 3\n6 5\n")
    notes: list[str] = []
    convs = dailydialog.read_dailydialog_split(path, "test", notes)
    assert [[u.text for u in c.utterances] for c in convs] == [["a", "b"], ["d"], ["e", "f"]]
    assert convs[2].labels == ["surprise", "sadness"]
    assert len(notes) == 2
    assert ":1: dialogue test_0 has 3 utterances but 2 labels; dropped 1" in notes[0]
    assert ":2: dialogue test_1 has 1 utterances but 3 labels; ignored 2" in notes[1]


def test_dailydialog_errors(tmp_path: Path) -> None:
    path = _dd_zip(tmp_path / "dd_test.zip", "test", "a __eou__\nb __eou__\n", "0\n9\n")
    with pytest.raises(DataError) as err:
        dailydialog.read_dailydialog_split(path, "test")
    assert "dialogues_emotion_test.txt]:2: label '9'" in one_line(err)

    path = _dd_zip(tmp_path / "dd_test.zip", "test", "a __eou__\nb __eou__\n", "0\n")
    with pytest.raises(DataError, match="dialogues_emotion_test.txt]: ends at line 1"):
        dailydialog.read_dailydialog_split(path, "test")

    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.zip: cannot open zip archive"):
        dailydialog.read_dailydialog_split(tmp_path / "bad.zip", "test")


# --- registry -----------------------------------------------------------------------------

def test_resolve_data_dir_orders(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_data_dir("meld", shared_data) == shared_data / "meld"
    assert resolve_data_dir("meld", shared_data / "meld") == shared_data / "meld"
    monkeypatch.setenv("IEIN_DATA_DIR", str(shared_data))
    assert resolve_data_dir("dailydialog") == shared_data / "dailydialog"
    monkeypatch.setenv("IEIN_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as err:
        resolve_data_dir("meld")
    assert "iein data download meld" in one_line(err) and str(tmp_path / "meld") in str(err.value)
    with pytest.raises(DataError) as err:
        resolve_data_dir("iemocap")
    assert "https://sail.usc.edu/iemocap/" in one_line(err)
    with pytest.raises(DataError, match="unknown dataset 'friends'"):
        resolve_data_dir("friends")


def test_resolve_data_dir_shared_checkout_layout(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Path(__file__).resolve().parents[1]
    if shared_data.resolve() != (repo.parent / "shared" / "data").resolve():
        pytest.skip("shared data is not next to the checkout")
    monkeypatch.delenv("IEIN_DATA_DIR", raising=False)
    monkeypatch.chdir(repo)
    assert resolve_data_dir("iemocap").resolve() == (shared_data / "iemocap").resolve()


def test_load_corpus_fixed_labels(shared_data: Path) -> None:
    with pytest.raises(DataError, match="labels are fixed"):
        load_corpus("iemocap", shared_data, labels=("a", "b"))
    with pytest.raises(DataError, match="takes no train/dev/test files"):
        load_corpus("meld", shared_data, train="mine.jsonl")


def test_download_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert download_dir("meld", tmp_path) == tmp_path / "meld"
    monkeypatch.setenv("IEIN_DATA_DIR", str(tmp_path / "env"))
    assert download_dir("dailydialog") == tmp_path / "env" / "dailydialog"
    monkeypatch.delenv("IEIN_DATA_DIR")
    assert download_dir("meld") == Path.home() / ".cache" / "iein" / "data" / "meld"

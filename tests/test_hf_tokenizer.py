"""A base model's tokenizer read with ``tokenizers`` alone gives transformers' ids.

On real text (MELD and IEMOCAP utterances, with and without speaker names) for the packaged
models, and on the tiny BERT of the encoder tests; a folder without ``tokenizer.json`` goes
through transformers; copying the tokenizer's files keeps it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from iein.encoders.hf_tokenizer import FileTokenizer, TransformersTokenizer, load_tokenizer, read_model_config
from iein.errors import ConfigError
from tests.test_transformer_encoder import VOCAB, make_tiny_bert


def corpus_texts(shared_data: Path) -> list[str]:
    from iein.data.registry import load_corpus

    texts = []
    for name in ("meld", "iemocap"):
        for conv in load_corpus(name, str(shared_data / name))["test"]:
            for u in conv.utterances:
                texts += [u.text, f"{u.speaker}: {u.text}"]
    return texts


def assert_same_as_transformers(folder: Path, texts: list[str]) -> None:
    fast, reference = FileTokenizer(folder), TransformersTokenizer(folder)
    assert fast.encode_many(texts) == reference.encode_many(texts)
    assert fast.pair_template() == reference.pair_template()
    assert (fast.pad_token_id, fast.unk_token_id, fast.model_max_length) == \
        (reference.pad_token_id, reference.unk_token_id, reference.model_max_length)


@pytest.mark.parametrize("model", ["minilm", "mpnet"])
def test_packaged_tokenizers_give_transformers_ids_on_the_corpora(model: str, shared_data: Path) -> None:
    from iein.encoders.base_models import resolve_model

    try:
        folder, _ = resolve_model(model)
    except ConfigError as exc:
        pytest.skip(f"{model} is not installed: {exc}")
    texts = corpus_texts(shared_data)
    assert len(texts) > 5000
    assert_same_as_transformers(folder, texts)


def test_tiny_bert_tokenizer_and_its_copy(tmp_path: Path) -> None:
    folder = make_tiny_bert(tmp_path / "bert")
    texts = ["hello world", "Joey: how are you ?", "zebra unknown words", ""]
    assert_same_as_transformers(folder, texts)
    copy = tmp_path / "copy"
    copy.mkdir()
    assert "tokenizer.json" in FileTokenizer(folder).save_pretrained(str(copy))
    assert FileTokenizer(copy).encode_many(texts) == FileTokenizer(folder).encode_many(texts)


def test_a_folder_without_tokenizer_json_goes_through_transformers(tmp_path: Path) -> None:
    folder = make_tiny_bert(tmp_path / "bert")
    (folder / "tokenizer.json").unlink()
    tok = load_tokenizer(folder)
    assert isinstance(tok, TransformersTokenizer)
    assert tok.encode_many(["hello world"]) == [[VOCAB.index("hello"), VOCAB.index("world")]]


def test_model_config_is_read_from_its_file(tmp_path: Path) -> None:
    folder = make_tiny_bert(tmp_path / "bert")
    assert read_model_config(folder) == {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                                         "max_position_embeddings": 128}
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json: cannot read the base model's config"):
        read_model_config(folder)

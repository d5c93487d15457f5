"""Presets: the paper's section 3.3 verbatim, and every preset builds a valid configuration."""
from __future__ import annotations

import pytest

from iein.encoders.glove import WordFeaturizer
from iein.encoders.registry import get_encoder_class
from iein.errors import ConfigError
from iein.models.iein import IEIN, IEINConfig
from iein.models.registry import build_model, get_model_class
from iein.text.vocab import Vocab
from iein.training.config import PRESETS, TrainConfig, get_preset
from iein.training.experiment import resolve_experiment


def build_iein(name: str) -> tuple[IEIN, TrainConfig]:
    """The preset's IEIN (a tiny vocabulary: the sizes that matter do not depend on it)."""
    exp = resolve_experiment(preset=name)
    assert (exp.arch, exp.encoder) == ("iein", "glove-bigru")
    vocab = Vocab(["<pad>", "<unk>", "hello"])
    model = build_model(exp.arch, dict(exp.model, n_labels=7), exp.encoder,
                        dict(exp.encoder_config, vocab_size=len(vocab), embedding_dim=8),
                        featurizer=WordFeaturizer(vocab))
    assert isinstance(model, IEIN)
    return model, exp.train


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name):
    preset = get_preset(name)
    get_model_class(preset.arch).config_class(**preset.model)
    get_encoder_class(preset.encoder).config_class(**preset.encoder_config)
    TrainConfig(**preset.train)
    assert preset.description
    exp = resolve_experiment(preset=name)
    assert (exp.preset, exp.arch, exp.encoder) == (name, preset.arch, preset.encoder)


@pytest.mark.parametrize("name, lr, lam, t, utt, ctx", [
    ("meld-paper", 1e-4, 5.0, 2, 100, 232),
    ("iemocap-paper", 2e-4, 50.0, 3, 50, 132),
])
def test_paper_presets_are_section_3_3(name, lr, lam, t, utt, ctx):
    model, train = build_iein(name)
    cfg, enc = model.config, model.utterance_encoder.config
    assert (train.lr, cfg.lam, cfg.iterations) == (lr, lam, t)
    # eq. 7: the EC-Encoder's GRU size is 2 * utterance GRU size + emotion_dim
    assert (enc.hidden, model.ec_encoder.gru.hidden_size, cfg.emotion_dim) == (utt, ctx, 32)
    assert (train.batch_size, train.weight_decay, cfg.dropout, enc.dropout) == (32, 1e-4, 0.1, 0.1)
    assert cfg.variant == "iein" and cfg.feedback_dropout == 0.0 and train.class_weighting == "none"


def test_default_presets_keep_the_paper_architecture_and_loss():
    for name, paper in (("meld", "meld-paper"), ("iemocap", "iemocap-paper")):
        (ours, _), (ref, _) = build_iein(name), build_iein(paper)
        assert (ours.utterance_encoder.config.hidden, ours.ec_encoder.gru.hidden_size, ours.config.iterations) == \
            (ref.utterance_encoder.config.hidden, ref.ec_encoder.gru.hidden_size, ref.config.iterations)
        assert ours.config.lam == ref.config.lam
    assert PRESETS["meld"].encoder_config["hidden"] == 100 and PRESETS["iemocap"].encoder_config["hidden"] == 50


def test_overrides_are_routed_to_their_section():
    exp = resolve_experiment("meld", overrides={"utterance_hidden": 8, "lam": 50, "lr": 0.01,
                                                "model.dropout": 0.2, "encoder.dropout": 0.3})
    assert exp.encoder_config["hidden"] == 8 and exp.model["lam"] == 50 and exp.train.lr == 0.01
    assert exp.model["dropout"] == 0.2 and exp.encoder_config["dropout"] == 0.3
    assert exp.model["iterations"] == 2  # the rest of the preset is kept
    with pytest.raises(ConfigError, match="ambiguous"):
        resolve_experiment("meld", overrides={"dropout": 0.2})
    with pytest.raises(ConfigError, match="bogus"):
        resolve_experiment("meld", overrides={"model.bogus": 1})
    with pytest.raises(ConfigError, match=r"unknown fields \[.utterance_hidden.\]"):  # an encoder field now
        IEINConfig.from_dict({"utterance_hidden": 8})


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("nope")


def test_own_corpus_iein_on_a_transformer_mixes_layers_and_projects():
    """`iein train --train my.jsonl ... --encoder transformer`: the generic preset's IEIN reads
    frozen vectors mixing the last 4 layers, projected to 128-d; its GloVe settings do not
    follow it, another model on the transformer keeps the encoder's defaults, and --set wins."""
    from iein.training.experiment import resolve_experiment

    exp = resolve_experiment(None, "generic", encoder="transformer")
    assert exp.encoder_config == {"layers": 4} and exp.model["utterance_proj"] == 128
    assert "the preset's settings for it" in exp.description
    assert resolve_experiment(None, "generic").encoder_config == {"hidden": 100, "dropout": 0.1}
    cnn = resolve_experiment(None, "generic", arch="cnn", encoder="transformer")
    assert cnn.encoder_config == {} and "utterance_proj" not in cnn.model
    assert resolve_experiment(None, "generic", encoder="transformer",
                              overrides={"encoder.layers": 1}).encoder_config == {"layers": 1}
    # the datasets' presets are unchanged on a transformer
    assert resolve_experiment("meld", None, encoder="transformer").encoder_config == {}


def test_an_installed_mpnet_is_advised_where_frozen_minilm_would_run(monkeypatch):
    from iein.encoders import base_models
    from iein.training.experiment import encoder_advice

    monkeypatch.setattr(base_models, "packaged_installed", lambda spec: spec == "mpnet")
    own = resolve_experiment(None, "generic", encoder="transformer")
    assert "--set encoder.model=mpnet" in encoder_advice(own)
    assert encoder_advice(resolve_experiment(None, "generic", encoder="transformer",
                                             overrides={"encoder.model": "mpnet"})) is None
    assert encoder_advice(resolve_experiment(None, "generic", encoder="transformer",
                                             overrides={"encoder.mode": "lora"})) is None
    assert encoder_advice(resolve_experiment(None, "generic")) is None  # GloVe
    monkeypatch.setattr(base_models, "packaged_installed", lambda spec: False)
    assert encoder_advice(own) is None

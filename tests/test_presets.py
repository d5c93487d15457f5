"""Presets: the paper's section 3.3 verbatim, and every preset builds a valid configuration."""
from __future__ import annotations

import pytest

from iein.errors import ConfigError
from iein.models.iein import IEINConfig
from iein.training.config import PRESETS, TrainConfig, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name):
    preset = get_preset(name)
    IEINConfig(**preset.model)
    TrainConfig(**preset.train)
    assert preset.description


@pytest.mark.parametrize("name, lr, lam, t, utt, ctx", [
    ("meld-paper", 1e-4, 5.0, 2, 100, 232),
    ("iemocap-paper", 2e-4, 50.0, 3, 50, 132),
])
def test_paper_presets_are_section_3_3(name, lr, lam, t, utt, ctx):
    preset = get_preset(name)
    model, train = IEINConfig(**preset.model), TrainConfig(**preset.train)
    assert (train.lr, train.lam, model.iterations) == (lr, lam, t)
    assert (model.utterance_hidden, model.context_hidden, model.emotion_dim) == (utt, ctx, 32)
    assert (train.batch_size, train.weight_decay, model.dropout) == (32, 1e-4, 0.1)
    assert model.variant == "iein" and model.feedback_dropout == 0.0 and train.class_weighting == "none"


def test_default_presets_keep_the_paper_architecture_and_loss():
    for name, paper in (("meld", "meld-paper"), ("iemocap", "iemocap-paper")):
        ours, ref = IEINConfig(**get_preset(name).model), IEINConfig(**get_preset(paper).model)
        assert (ours.utterance_hidden, ours.context_hidden, ours.iterations) == \
            (ref.utterance_hidden, ref.context_hidden, ref.iterations)
        assert TrainConfig(**get_preset(name).train).lam == TrainConfig(**get_preset(paper).train).lam


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("nope")

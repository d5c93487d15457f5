"""cLSTM+CRF: the cLSTM baseline with a linear-chain CRF over each dialogue's labels.

The IEIN paper (Lu et al., COLING 2020, section 3.2) adds "a CRF (Conditional Random
Fields) layer after the contextual LSTM, so that this baseline could capture the
dependencies between emotion labels" (Tables 1-2, row cLSTM+CRF); the paper gives no
further detail and its code is not public.  The CRF is Lafferty et al. (ICML 2001)'s
linear chain: with the cLSTM's emission scores e_t(y) (:meth:`CLSTM.emissions`), a start
score s(y), an end score f(y) and transition scores A(y, y'),

    score(y_1..y_n) = s(y_1) + sum_t e_t(y_t) + sum_{t>1} A(y_{t-1}, y_t) + f(y_n)
    p(y | dialogue) = exp(score(y)) / Z,   Z = sum over all L^n label sequences.

* **loss**: the negative log-likelihood -log p(y | dialogue), averaged over the dialogues of
  the batch that have at least one label.  It is computed by the maintained
  ``pytorch-crf`` library (``torchcrf.CRF``, whose three parameters are this module's
  ``crf.*`` state-dict entries) for fully labelled dialogues, the usual case.  A dialogue
  with unlabelled utterances (``IGNORE``) inside is scored by the probability of its
  *observed* labels, marginalising the unlabelled ones: -log (Z_observed / Z), where
  Z_observed sums only over sequences that agree with every given label (the forward
  algorithm with the other labels' emissions at -inf).  This equals the library's NLL when
  every utterance is labelled (tested), so one objective covers both cases.
  Note the scale: a dialogue's NLL is a *sum* over its utterances, where the
  cross-entropy of the other models is a mean over utterances.
  ``class_weight`` is refused (ConfigError): a sequence likelihood has no per-utterance
  weights, and silently ignoring an option the user asked for would mislead.
* **decode**: the Viterbi path (``torchcrf.CRF.decode``), the most likely label *sequence*.
* **step_probs**: per-utterance marginals p(y_t = y | dialogue) by the forward-backward
  algorithm in log space (:func:`crf_marginals`, on the CRF's own parameters, so they are
  this CRF's probabilities).  The argmax of the marginals is the best label of each
  utterance on its own and may differ from the Viterbi path at some positions; the label
  reported is Viterbi's (:meth:`decode`), the probabilities are the marginals.

``causal=true``: the cLSTM reads forward only, and an utterance's label and probabilities
are the CRF's *filtering* distribution p(y_t | utterances 1..t) (the normalised forward
scores alpha_t), which later utterances cannot change; Viterbi and the marginals read the
whole dialogue.  Training is the same sequence likelihood.

Padding: every recursion keeps the state of a dialogue unchanged past its last utterance
(``torch.where`` on the dialogue mask), so padded positions never reach real ones.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchcrf import CRF

from ..data.batching import IGNORE, Batch
from ..encoders.base import UtteranceEncoder
from ..errors import ConfigError
from .clstm import CLSTM, CLSTMConfig


@dataclasses.dataclass
class CLSTMCRFConfig(CLSTMConfig):
    section: ClassVar[str] = "model clstm_crf"


def crf_forward(emissions: Tensor, mask: Tensor, crf: CRF) -> Tensor:
    """Forward scores ``alpha (B, N, L)``: alpha_t(y) = log of the summed exp-scores of all
    label prefixes y_1..y_t with y_t = y.  Past a dialogue's end alpha stays at its last
    real value.  ``emissions (B, N, L)``, ``mask (B, N)`` True at real positions (the first
    position of every dialogue is real)."""
    alpha = [crf.start_transitions + emissions[:, 0]]
    for t in range(1, emissions.size(1)):
        # (B, L_prev, 1) + (L_prev, L_next) -> sum out the previous label
        step = torch.logsumexp(alpha[-1].unsqueeze(2) + crf.transitions, dim=1) + emissions[:, t]
        alpha.append(torch.where(mask[:, t, None], step, alpha[-1]))
    return torch.stack(alpha, dim=1)


def crf_backward(emissions: Tensor, mask: Tensor, crf: CRF) -> Tensor:
    """Backward scores ``beta (B, N, L)``: beta_t(y) = log of the summed exp-scores of all
    label suffixes after position t given y_t = y, end score included (so beta at a
    dialogue's last utterance, and past it, is the end score)."""
    n = emissions.size(1)
    end = crf.end_transitions.expand(emissions.size(0), -1)
    beta = [end]
    for t in range(n - 2, -1, -1):
        # (L_prev, L_next) + (B, 1, L_next) -> sum out the next label
        step = torch.logsumexp(crf.transitions + (emissions[:, t + 1] + beta[-1]).unsqueeze(1), dim=2)
        beta.append(torch.where(mask[:, t + 1, None], step, end))
    return torch.stack(beta[::-1], dim=1)


def crf_log_partition(emissions: Tensor, mask: Tensor, crf: CRF) -> Tensor:
    """log Z ``(B,)``: the log of the summed exp-scores of every label sequence."""
    return torch.logsumexp(crf_forward(emissions, mask, crf)[:, -1] + crf.end_transitions, dim=-1)


def crf_marginals(emissions: Tensor, mask: Tensor, crf: CRF) -> Tensor:
    """p(y_t = y | dialogue) ``(B, N, L)`` by forward-backward (uniform at padding)."""
    alpha, beta = crf_forward(emissions, mask, crf), crf_backward(emissions, mask, crf)
    log_z = torch.logsumexp(alpha[:, -1] + crf.end_transitions, dim=-1)
    probs = torch.exp(alpha + beta - log_z[:, None, None])
    return torch.where(mask[..., None], probs, torch.full_like(probs, 1.0 / probs.size(-1)))


def crf_partial_nll(emissions: Tensor, labels: Tensor, mask: Tensor, crf: CRF) -> Tensor:
    """-log p(observed labels) ``(B,)``, summing over every value of the ``IGNORE`` ones."""
    labelled = labels != IGNORE
    other = torch.arange(emissions.size(-1), device=labels.device) != labels[..., None]
    observed = emissions.masked_fill(labelled[..., None] & other, float("-inf"))
    return crf_log_partition(emissions, mask, crf) - crf_log_partition(observed, mask, crf)


class CLSTMCRF(CLSTM):
    """cLSTM emissions + a linear-chain CRF; one step whose logits are the emissions."""

    model_type = "clstm_crf"
    config_class = CLSTMCRFConfig
    reference = "Lu et al. (COLING 2020) cLSTM+CRF baseline: bc-LSTM (Poria et al. 2017) + linear-chain CRF (Lafferty et al. 2001)"
    config: CLSTMCRFConfig
    supports_class_weight = False

    def __init__(self, config: CLSTMCRFConfig, encoder: UtteranceEncoder) -> None:
        super().__init__(config, encoder)
        self.crf = CRF(config.n_labels, batch_first=True)

    def loss(self, steps: list[Tensor], batch: Batch, class_weight: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        if class_weight is not None:
            raise ConfigError(f"{self.config.section}: class weights are not supported by the CRF "
                              "likelihood (set train class_weighting to 'none')")
        emissions = steps[-1].float()  # the CRF recursions in float32 even under autocast
        mask, labels = batch.mask, batch.labels
        labelled = labels != IGNORE
        full = (labelled == mask).all(dim=1)  # every real utterance labelled
        partial = labelled.any(dim=1) & ~full
        terms = []
        if bool(full.any()):
            tags = labels[full].clamp(min=0)  # padding: any valid id, masked out by the library
            terms.append(-self.crf(emissions[full], tags, mask[full], reduction="none"))
        if bool(partial.any()):
            terms.append(crf_partial_nll(emissions[partial], labels[partial], mask[partial], self.crf))
        if not terms:  # no labels at all (``forward`` does not ask for a loss then)
            return emissions.sum() * 0.0, {"nll": 0.0}
        loss = torch.cat(terms).mean()
        return loss, {"nll": float(loss.detach())}

    def decode(self, steps: list[Tensor], batch: Batch) -> Tensor:
        """Viterbi label ids ``(B, 1, N)`` (0 at padded positions); causal: the argmax of the
        filtering distribution."""
        if self.config.causal:
            return self.step_probs(steps, batch).argmax(-1)
        emissions = steps[-1].float()
        paths = self.crf.decode(emissions, batch.mask)
        out = torch.zeros(emissions.shape[:2], dtype=torch.long)
        for i, path in enumerate(paths):
            out[i, : len(path)] = torch.tensor(path, dtype=torch.long)
        return out.to(emissions.device).unsqueeze(1)

    def step_probs(self, steps: list[Tensor], batch: Batch) -> Tensor:
        """Forward-backward marginals ``(B, 1, N, L)``; causal: the filtering distribution."""
        if self.config.causal:
            return torch.softmax(crf_forward(steps[-1].float(), batch.mask, self.crf), dim=-1).unsqueeze(1)
        return crf_marginals(steps[-1].float(), batch.mask, self.crf).unsqueeze(1)

    def stream_start(self) -> tuple[list[Any], Tensor | None]:
        return super().stream_start(), None

    def stream_step(self, u: Tensor, speaker: int, state: tuple[list[Any], Tensor | None]
                    ) -> tuple[Tensor, Tensor, tuple[list[Any], Tensor | None]]:
        """One step of :func:`crf_forward` from the carried alpha_{t-1}."""
        emission, lstm = self.stream_emissions(u, state[0])
        emission, prev = emission.float(), state[1]
        if prev is None:
            alpha = self.crf.start_transitions + emission
        else:
            alpha = torch.logsumexp(prev.unsqueeze(2) + self.crf.transitions, dim=1) + emission
        probs = torch.softmax(alpha, dim=-1)
        return probs, probs.argmax(-1), (lstm, alpha)

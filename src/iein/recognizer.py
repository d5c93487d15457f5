"""Use a trained model (IEIN or any baseline, on any encoder) on your own conversations: the Python API behind ``iein predict``.

::

    from iein.recognizer import Recognizer

    rec = Recognizer.load("meld")                  # a shipped model, or a .safetensors path
    rec.predict([("Ross", "We were on a break!"), ("Rachel", "Oh, here we go again.")])
    # -> [{"speaker": "Ross", "text": "...", "label": "anger",
    #      "probs": {"neutral": 0.1, ...}, "steps": ["neutral", "anger", "anger"]}, ...]

A conversation is a list of ``{"speaker", "text"}`` dicts (an optional ``"label"`` is the
gold label: it is checked against the model's label set and echoed as ``"gold"``), a list
of ``(speaker, text)`` pairs, a :class:`~iein.data.conversation.Conversation`, or a
``{"id"?, "utterances": [...]}`` object.  Every input goes through the one validator,
:func:`iein.data.generic.conversation_from_obj`, so errors name the utterance and field.

``steps`` holds the label of every iteration step P^0 ... P^T (the paper's Table 5);
``label`` and ``probs`` are those of the last step, the model's prediction.

Limits for prediction (the readers' own, the same in training):

* an utterance may be up to :data:`MAX_UTTERANCE_CHARS` (1,000,000) characters; the
  encoder reads only its first :data:`~iein.data.batching.MAX_WORDS` tokens, exactly
  as in training, so a 100,000-character utterance is accepted and truncated rather than
  refused (the text is echoed in full);
* a conversation may hold up to :data:`MAX_UTTERANCES` utterances (the reader's limit);
  a long conversation is processed in one piece (its context is the whole conversation)
  with the utterance encoder run in bounded chunks, so memory does not grow with padding.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .checkpoint import LoadedModel, load_checkpoint
from .encoders.onnx_runtime import runtime_for_device
from .data.conversation import Conversation
from .data.generic import MAX_UTTERANCE_CHARS, MAX_UTTERANCES, conversation_from_obj
from .errors import CheckpointError, DataError, IeinError
from .data.batching import EncodedConversation, encode_with
from .evaluation.ensemble import average, check_members, ensemble_steps, feature_key
from .evaluation.evaluate import infer
from .models.base import ConversationModel
from .shipped import default_model, resolve_model, shipped_models

__all__ = [
    "Recognizer",
    "ConversationPrediction",
    "shipped_models",
    "resolve_model",
    "MAX_UTTERANCE_CHARS",
    "MAX_UTTERANCES",
    "MAX_BATCH_UTTERANCES",
]

#: Cap on the total utterances of one inference batch (a longer conversation is its own batch).
MAX_BATCH_UTTERANCES = 2048


# --- results ----------------------------------------------------------------------------

@dataclass
class ConversationPrediction:
    """The model's output for one conversation.

    ``probs`` is ``(steps, n_utterances, n_labels)``: the class probabilities of every step
    P^0 ... P^T; the prediction is the last step.
    """

    conversation: Conversation
    probs: np.ndarray
    labels: tuple[str, ...]
    ids: np.ndarray | None = None  # the model's decoding, when it is not the argmax (CRF: Viterbi)

    @property
    def step_ids(self) -> np.ndarray:
        """``(steps, n_utterances)`` label ids of every step (argmax unless the model decodes)."""
        return self.ids if self.ids is not None else self.probs.argmax(-1)

    def to_dicts(self, digits: int | None = None) -> list[dict[str, Any]]:
        """One dict per utterance: speaker, text, label, probs (final step), steps (+ gold).

        ``digits`` rounds the probabilities (the CLI uses 6); the labels are taken before
        rounding, so they are always the argmax of the exact probabilities.
        """
        labels = self.labels
        step_ids = self.step_ids.T.tolist()  # (n_utterances, steps)
        final = self.probs[-1].astype(np.float64)
        if digits is not None:
            final = final.round(digits)
        final_rows = final.tolist()
        out = []
        for utt, ids, row in zip(self.conversation.utterances, step_ids, final_rows):
            item: dict[str, Any] = {
                "speaker": utt.speaker,
                "text": utt.text,
                "label": labels[ids[-1]],
                "probs": dict(zip(labels, row)),
                "steps": [labels[i] for i in ids],
            }
            if utt.label is not None:
                item["gold"] = utt.label
            out.append(item)
        return out


# --- the recognizer ---------------------------------------------------------------------

class Recognizer:
    """A loaded checkpoint ready to label new conversations (eval mode, on ``device``).

    Given several checkpoints it is their ensemble (:mod:`iein.evaluation.ensemble`): each
    member featurizes and labels the conversation, the class probabilities are averaged;
    :attr:`model`, :attr:`card` and :attr:`path` are then those of the first member and
    :attr:`members` lists every member's source."""

    def __init__(self, loaded: LoadedModel | Sequence[LoadedModel], source: str | Sequence[str] = "<memory>",
                 path: Path | None = None, device: str = "cpu") -> None:
        members = [loaded] if isinstance(loaded, LoadedModel) else list(loaded)
        sources = [source] if isinstance(source, str) else list(source)
        if not members or len(sources) != len(members):
            raise IeinError("a Recognizer needs at least one model, and one source name per model")
        check_members([m.labels for m in members], [m.meta for m in members], sources)
        for member, src in zip(members, sources):
            if member.model.is_oracle:
                raise CheckpointError(
                    f"{src}: this is a gold_label ablation model, an oracle that reads the gold "
                    "labels of the context; it cannot label new conversations (use an 'iein' model)"
                )
            member.model.eval()
        if device != "cpu":
            import torch

            if torch.device(device).type == "cuda" and not torch.cuda.is_available():
                raise IeinError(f"device {device!r}: CUDA is not available on this machine")
            for member in members:
                member.model.to(device)
        self._members = members
        self._feature_keys = [feature_key(m.meta) for m in members]
        self._loaded = members[0]
        self._model: ConversationModel = members[0].model
        self.members = tuple(sources)
        source = " + ".join(sources)
        self.device = device
        self._labels = tuple(members[0].labels)
        self._label_set = frozenset(self._labels)
        self._index = {name: i for i, name in enumerate(self._labels)}
        self.source = source
        self.path = path

    @classmethod
    def load(cls, path_or_name: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
             device: str = "cpu", runtime: str = "auto") -> "Recognizer":
        """Load a checkpoint file or a shipped model by name (e.g. ``"meld"``); a list of
        them loads their ensemble; nothing loads the best shipped model the installed extras
        can run (:func:`iein.shipped.default_model`; ``source`` names it).  ``runtime``: how a
        transformer encoder computes (:mod:`iein.encoders.onnx_runtime`); ``auto`` is ONNX
        Runtime on the CPU when installed, PyTorch otherwise and on a GPU."""
        runtime = runtime_for_device(runtime, device)
        if path_or_name is None:
            path_or_name = default_model()[0]
        names = [path_or_name] if isinstance(path_or_name, (str, os.PathLike)) else list(path_or_name)
        paths = [resolve_model(n) for n in names]
        return cls([load_checkpoint(p, runtime=runtime) for p in paths], source=[os.fspath(n) for n in names],
                   path=paths[0], device=device)

    # -- description

    @property
    def labels(self) -> tuple[str, ...]:
        """The label set, in the order of the model's outputs."""
        return self._labels

    @property
    def steps(self) -> int:
        """Number of steps reported per utterance (P^0 ... P^T; an ensemble's, see
        :func:`iein.evaluation.ensemble.ensemble_steps`)."""
        return ensemble_steps([m.model.n_steps for m in self._members])

    @property
    def model(self) -> ConversationModel:
        return self._model

    @property
    def checkpoints(self) -> tuple[LoadedModel, ...]:
        """The loaded checkpoints behind the API, one per member, the first the card's: their
        featurizers, vocabularies and metadata."""
        return tuple(self._members)

    @property
    def card(self) -> dict[str, Any]:
        """The checkpoint's metadata (config, labels, provenance, scores...) without the
        vocabulary; a model card ``<name>.card.json`` beside the checkpoint is added under
        ``"model_card"``."""
        card = {k: v for k, v in self._loaded.meta.items() if k not in ("vocab", "featurizer")}
        if len(self._members) > 1:
            card["ensemble"] = list(self.members)
        if self._loaded.vocab is not None:
            card["vocab_size"] = len(self._loaded.vocab)
        if self.path is not None:
            side = self.path.with_suffix(".card.json")  # iein.safetensors -> iein.card.json (hub.CARD_FILE)
            if side.is_file():
                try:
                    card["model_card"] = json.loads(side.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise CheckpointError(f"{side}: unreadable model card: {exc}") from None
        return card

    def __repr__(self) -> str:
        return (f"Recognizer({self.source!r}, model={self._model.describe()}, encoder="
                f"{self._model.utterance_encoder.encoder_type}, steps={self.steps}, labels={list(self._labels)})")

    # -- input

    def conversation(self, obj: Any, where: str = "conversation") -> Conversation:
        """Validate any accepted conversation form and check its gold labels, if any."""
        default_id = None
        if isinstance(obj, Conversation):
            default_id = obj.id
            obj = {"id": obj.id, "utterances": [
                {"speaker": u.speaker, "text": u.text, "label": u.label} for u in obj.utterances
            ]}
        elif isinstance(obj, tuple):
            obj = list(obj)
        elif not isinstance(obj, (dict, list, str, bytes)) and isinstance(obj, Iterable):
            obj = list(obj)
        conv = conversation_from_obj(
            obj, where, default_id=default_id,
            max_utterance_chars=MAX_UTTERANCE_CHARS, max_utterances=MAX_UTTERANCES,
        )
        for i, u in enumerate(conv.utterances):
            if u.label is not None and u.label not in self._label_set:
                raise DataError(
                    f"{where} utterance {i} field 'label': unknown label {u.label!r}; this "
                    f"model's labels are {', '.join(self._labels)}"
                )
        return conv

    # -- prediction

    def stream(self, max_utterances: int = MAX_UTTERANCES,
               max_utterance_chars: int = MAX_UTTERANCE_CHARS) -> Any:
        """A live session (:class:`iein.stream.StreamSession`): ``session.add(speaker, text)``
        labels each new utterance at once.  The model must be causal (``causal=true``); an
        ensemble cannot stream."""
        from .stream import StreamSession

        problem = self.stream_problem()
        if problem:
            raise IeinError(problem)
        return StreamSession(self._loaded, self._labels, self.source, max_utterances, max_utterance_chars)

    def stream_problem(self) -> str | None:
        """Why :meth:`stream` would refuse (one line), or None: it needs one causal model whose
        encoder reads no later utterance."""
        from .stream import check_streamable

        if len(self._members) > 1:
            return f"{self.source}: an ensemble of {len(self._members)} models cannot stream; stream one of them"
        try:
            check_streamable(self._loaded, self.source)
        except IeinError as exc:
            return str(exc)
        return None

    @property
    def streams(self) -> bool:
        """Whether :meth:`stream` works (see :meth:`stream_problem`)."""
        return self.stream_problem() is None

    def predict(self, conversation: Any) -> list[dict[str, Any]]:
        """Labels of one conversation: one dict per utterance (see module doc)."""
        conv = self.conversation(conversation)
        return self._infer(self._encode([conv]), [conv])[0].to_dicts()

    def predict_many(
        self, conversations: Iterable[Any], batch_size: int = 32,
        max_batch_utterances: int = MAX_BATCH_UTTERANCES,
    ) -> Iterator[list[dict[str, Any]]]:
        """Stream :meth:`predict` over many conversations, in input order, batching inside.

        At most ``batch_size`` conversations and ``max_batch_utterances`` utterances are
        held at a time (a longer conversation is a batch of its own), so any number of
        conversations can be streamed in bounded memory.
        """
        for pred in self.iter_predictions(conversations, batch_size, max_batch_utterances):
            yield pred.to_dicts()

    def iter_predictions(
        self, conversations: Iterable[Any], batch_size: int = 32,
        max_batch_utterances: int = MAX_BATCH_UTTERANCES, source: str | None = None,
    ) -> Iterator[ConversationPrediction]:
        """Like :meth:`predict_many`, yielding :class:`ConversationPrediction` objects
        (the validated conversation and every step's probabilities).  ``source`` (e.g. the
        input file name) starts error messages."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise IeinError(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_batch_utterances < 1:
            raise IeinError(f"max_batch_utterances must be positive, got {max_batch_utterances!r}")
        convs: list[Conversation] = []
        n_utts = 0
        for k, item in enumerate(conversations):
            if isinstance(item, Conversation):
                where = f"conversation {item.id!r}"
            else:
                where = f"conversation[{k}]"
            if source:
                where = f"{source}: {where}"
            conv = self.conversation(item, where)
            if convs and (len(convs) >= batch_size or n_utts + len(conv) > max_batch_utterances):
                yield from self._infer(self._encode(convs), convs)
                convs, n_utts = [], 0
            convs.append(conv)
            n_utts += len(conv)
        if convs:
            yield from self._infer(self._encode(convs), convs)

    def _encode(self, convs: Sequence[Conversation]) -> list[list[EncodedConversation]]:
        """Each member's features of a batch of conversations at once (a transformer encodes
        their utterances in shared, length-sorted batches), computed once for the members
        that share a featurizer (:func:`~.evaluation.ensemble.feature_key`: e.g. the seeds of
        one frozen-encoder preset); gold labels are not model inputs (checked above, kept on
        the Conversation)."""
        shared: dict[str, list[EncodedConversation]] = {}
        for member, key in zip(self._members, self._feature_keys):
            if key not in shared:
                feats = member.featurizer.featurize_batch(convs)
                shared[key] = [encode_with(conv, f, None) for conv, f in zip(convs, feats)]
        return [shared[key] for key in self._feature_keys]

    def _infer(self, items: Sequence[Sequence[EncodedConversation]],
               convs: Sequence[Conversation]) -> list[ConversationPrediction]:
        outputs = []
        for member, member_items in zip(self._members, items):
            member.model.eval()
            outputs.append(infer(member.model, member_items))  # (B, S, N, L), (B, S, N)
        if len(outputs) == 1:
            probs, ids = outputs[0]
            return [ConversationPrediction(conv, probs[row, :, : len(conv)], self._labels, ids[row, :, : len(conv)])
                    for row, conv in enumerate(convs)]
        return [ConversationPrediction(conv, average([p[row, :, : len(conv)] for p, _ in outputs]), self._labels)
                for row, conv in enumerate(convs)]

"""Label a conversation while it happens: one utterance in, its label out at once.

::

    rec = Recognizer.load("runs/meld-live-seed0.safetensors")   # a causal model
    session = rec.stream()
    session.add("Ross", "We were on a break!")   # -> {"index": 0, "label": ..., "probs": ..., "steps": ...}

Only a *causal* model can stream (``causal=true``, the ``*-live`` presets): its label of
utterance t reads utterances 1..t, so it is final when t arrives, and equal to what the
same model says about t given the whole conversation (``tests/test_stream.py``).  A model
with recurrent state (IEIN, cLSTM, cLSTM+CRF, CNN) carries it from one utterance to the
next, so each new utterance costs the same whatever the conversation's length; DialogueRNN
and DialogueGCN recompute the prefix (their attention reads all of it).  The encoder reads
the new utterance with its past window (a transformer's ``window_past``), never after it.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import numpy as np
import torch

from .checkpoint import LoadedModel
from .data.conversation import Conversation
from .data.generic import MAX_UTTERANCE_CHARS, MAX_UTTERANCES, make_utterance
from .errors import DataError, IeinError

__all__ = ["StreamSession", "check_streamable", "live_predictions", "parse_live_line"]


def check_streamable(loaded: LoadedModel, source: str) -> None:
    """Raise a one-line IeinError naming ``source`` when its model cannot label live: it reads
    later utterances (not causal), or its encoder's input holds following utterances."""
    model = loaded.model
    if model.is_oracle:
        raise IeinError(f"{source}: a gold_label ablation reads gold labels; it cannot label new conversations")
    if not model.causal:
        raise IeinError(f"{source}: this {model.model_type} model reads later utterances (it is not causal), so "
                        "it cannot label a conversation while it happens; train one with --set causal=true "
                        "(presets meld-live, iemocap-live)")
    future = loaded.featurizer.context_window[1]
    if future:
        raise IeinError(f"{source}: its encoder reads {future} following utterance(s) (window_future); a live "
                        "model needs window_future 0")


class StreamSession:
    """One live conversation over one causal model (see the module doc).  Not thread-safe:
    one session per conversation, its utterances added in order."""

    def __init__(self, loaded: LoadedModel, labels: Sequence[str], source: str = "<model>",
                 max_utterances: int = MAX_UTTERANCES, max_utterance_chars: int = MAX_UTTERANCE_CHARS) -> None:
        check_streamable(loaded, source)
        self.labels = tuple(labels)
        self.max_utterances = max_utterances
        self.max_utterance_chars = max_utterance_chars
        self._model = loaded.model.eval()
        self._featurizer = loaded.featurizer
        self._past: deque = deque(maxlen=self._featurizer.context_window[0])
        self._parties: dict[str, int] = {}
        self._state = self._model.stream_start()
        self._n = 0

    def __len__(self) -> int:
        """Utterances labelled so far."""
        return self._n

    def add(self, speaker: Any, text: Any, digits: int | None = None, where: str | None = None) -> dict[str, Any]:
        """Label the next utterance: ``{"index", "speaker", "text", "label", "probs", "steps"}``
        (``probs`` of the final step, rounded to ``digits`` when given; ``steps``: the label
        of every step P^0 ... P^T).  A bad utterance is refused before the session changes;
        ``where`` starts the error message (default ``utterance <index>``)."""
        where = where or f"utterance {self._n}"
        if self._n >= self.max_utterances:
            raise DataError(f"{where}: the session is full ({self.max_utterances} utterances); start a new one")
        utt = make_utterance(speaker, text, None, where, max_utterance_chars=self.max_utterance_chars)
        window = Conversation("live", [*self._past, utt])
        feature = self._featurizer.featurize_batch([window])[0][-1]
        party = self._parties.setdefault(utt.speaker, len(self._parties))
        encoder = self._model.utterance_encoder
        with torch.inference_mode():
            u = encoder.encode_many([feature])[0]
            probs, ids, self._state = self._model.stream_step(u, party, self._state)
        self._past.append(utt)
        self._n += 1
        final = probs[-1].double().cpu().numpy()
        if digits is not None:
            final = np.round(final, digits)
        return {"index": self._n - 1, "speaker": utt.speaker, "text": utt.text,
                "label": self.labels[int(ids[-1])], "probs": dict(zip(self.labels, final.tolist())),
                "steps": [self.labels[int(i)] for i in ids.tolist()]}


def parse_live_line(line: str, where: str) -> tuple[Any, Any] | None:
    """One line of ``iein predict --live``: a JSON object ``{"speaker", "text"}``,
    ``speaker<TAB>text`` or ``speaker: text``; None for a blank line (a new conversation)."""
    import json

    text = line.rstrip("\r\n")
    if not text.strip():
        return None
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict) or "speaker" not in obj or "text" not in obj:
            raise DataError(f"{where}: a JSON line needs the fields 'speaker' and 'text'")
        return obj["speaker"], obj["text"]
    for sep in ("\t", ": "):
        if sep in text:
            speaker, _, utterance = text.partition(sep)
            return speaker, utterance
    raise DataError(f"{where}: expected 'speaker: text', 'speaker<TAB>text' or a JSON object")


def live_predictions(open_session: Any, lines: Any, digits: int, on_error: Any) -> Any:
    """Label ``lines`` one by one as they come (``iein predict --live``): yields one output
    dict per utterance, with ``"conversation"`` (0, 1, ...: a blank line starts the next).
    A bad line goes to ``on_error(message)`` and is skipped; the session goes on."""
    session, conversation = open_session(), 0
    for n, line in enumerate(lines, 1):
        try:
            parsed = parse_live_line(line, f"line {n}")
            if parsed is None:
                if len(session):
                    session, conversation = open_session(), conversation + 1
                continue
            out = session.add(*parsed, digits=digits, where=f"line {n}")
        except DataError as exc:
            on_error(str(exc))
            continue
        yield {"conversation": conversation, **out}

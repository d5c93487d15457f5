"""The service's contract with its recognizer (:class:`Labeller`)."""
from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence


class Labeller(Protocol):
    """What the service asks of its recognizer: :class:`iein.recognizer.Recognizer` is one,
    and a test may pass any object with these members (a slow or gated fake).  The service
    reads nothing else, so this is the whole contract between the two layers."""

    labels: Sequence[str]
    steps: int | None
    source: str
    streams: bool
    card: Mapping[str, Any]

    def conversation(self, obj: Any) -> Any:
        """The request's conversation, validated (raises a one-line error)."""

    def predict(self, conversation: Any) -> list[dict[str, Any]]:
        """One row per utterance: speaker, text, label, probs, steps."""

    def predict_many(self, conversations: Sequence[Any], batch_size: int = 32) -> Sequence[list[dict[str, Any]]]:
        """:meth:`predict` of several conversations in one pass."""

    def stream_problem(self) -> str | None:
        """Why :meth:`stream` would refuse (one line), or None."""

    def stream(self) -> Any:
        """A live session (:class:`iein.stream.StreamSession`)."""

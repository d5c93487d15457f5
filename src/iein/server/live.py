"""The service's live endpoint: a WebSocket at ``/stream``, one session per connection.

Protocol (JSON text messages):

* on connecting, the server sends ``{"type": "ready", "labels", "steps", "limits"}``, or an
  error and closes (the model cannot stream, or too many sessions are open);
* the client sends one utterance per message, ``{"speaker": ..., "text": ...}``; the server
  answers ``{"type": "label", "index", "speaker", "text", "label", "probs", "steps"}`` at
  once (a causal model: the label is final);
* a bad message (not JSON, not an object, wrong fields, too long, oversized) is answered
  with ``{"type": "error", "error": code, "message": one line}`` and the session goes on;
* the session ends when the client closes, sends ``{"type": "close"}``, stays silent for
  ``idle_seconds`` (error ``idle_timeout``), or is full (error ``session_full``).

Each session holds its model state and at most ``max_utterances`` utterances' worth of it,
so memory is bounded by ``max_sessions x max_utterances``.  Inference runs in the threadpool
under one lock (one CPU-bound job at a time), so the event loop keeps serving.
"""
from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from ..errors import ConfigError, IeinError
from .labeller import Labeller

__all__ = ["StreamLimits", "add_stream_route"]


@dataclass(frozen=True)
class StreamLimits:
    """What the live endpoint allows; every limit is answered with a one-line error."""

    #: Sessions open at once (each is a WebSocket connection).
    max_sessions: int = 32
    #: Utterances in one session; the session is then closed (``session_full``).
    max_utterances: int = 1000
    #: Seconds a session may stay silent before the server closes it.
    idle_seconds: float = 300
    #: Bytes of one message.
    max_message_bytes: int = 32_768

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"stream limit {name!r} must be a positive number, got {value!r}")


def _error(code: str, message: str) -> dict[str, str]:
    return {"type": "error", "error": code, "message": message}


def _utterance(raw: str, max_bytes: int, max_speaker_chars: int) -> dict[str, Any] | str:
    """The utterance of one message, or the one-line error message that refuses it."""
    if len(raw.encode("utf-8", "surrogatepass")) > max_bytes:
        return f"message over {max_bytes} bytes"
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"malformed JSON: {exc.msg} at character {exc.pos}"
    if not isinstance(obj, dict):
        return 'send a JSON object {"speaker": ..., "text": ...}'
    unknown = set(obj) - {"speaker", "text", "type"}
    if unknown:
        return f"unknown field(s) {', '.join(sorted(unknown))}; send speaker and text"
    if isinstance(obj.get("speaker"), str) and len(obj["speaker"]) > max_speaker_chars:
        return f"field 'speaker': over {max_speaker_chars} characters"
    return obj


def add_stream_route(app: FastAPI, recognizer: Labeller, limits: StreamLimits, max_utterance_chars: int,
                     max_speaker_chars: int) -> None:
    """Add ``/stream`` to ``app`` (see the module doc)."""
    from ..output_formats import OUTPUT_DIGITS  # here: it imports torch

    lock = threading.Lock()
    open_sessions = 0
    problem = recognizer.stream_problem()
    ready = {"type": "ready", "labels": list(recognizer.labels), "steps": recognizer.steps,
             "limits": {**asdict(limits), "max_utterance_chars": max_utterance_chars}}

    def label(session: Any, obj: dict[str, Any]) -> dict[str, Any]:
        with lock:
            return {"type": "label", **session.add(obj.get("speaker"), obj.get("text"), digits=OUTPUT_DIGITS)}

    @app.websocket("/stream")
    async def stream(ws: WebSocket) -> None:
        nonlocal open_sessions
        await ws.accept()
        if problem:
            await ws.send_json(_error("not_streamable", problem.splitlines()[0]))
            await ws.close(code=1008)
            return
        if open_sessions >= limits.max_sessions:
            await ws.send_json(_error("too_many_sessions", f"{limits.max_sessions} sessions are open; try later"))
            await ws.close(code=1013)
            return
        open_sessions += 1
        try:
            session = recognizer.stream(limits.max_utterances, max_utterance_chars)
            await ws.send_json(ready)
            await _serve_session(ws, session, limits, max_speaker_chars, label)
        except WebSocketDisconnect:
            pass
        finally:
            open_sessions -= 1


async def _serve_session(ws: WebSocket, session: Any, limits: StreamLimits, max_speaker_chars: int,
                         label: Any) -> None:
    """Answer one session's messages until it ends (see the module doc)."""
    while True:
        try:
            raw = await asyncio.wait_for(ws.receive_text(), timeout=limits.idle_seconds)
        except asyncio.TimeoutError:
            await ws.send_json(_error("idle_timeout", f"no message for {limits.idle_seconds} s; session closed"))
            await ws.close(code=1000)
            return
        obj = _utterance(raw, limits.max_message_bytes, max_speaker_chars)
        if isinstance(obj, str):
            await ws.send_json(_error("invalid_message", obj))
            continue
        if obj.get("type") == "close":
            await ws.close(code=1000)
            return
        if obj.get("type") not in (None, "utterance"):
            await ws.send_json(_error("invalid_message", f"field 'type': unknown {obj['type']!r} (utterance, close)"))
            continue
        if len(session) >= limits.max_utterances:
            await ws.send_json(_error("session_full", f"the session holds {limits.max_utterances} utterances; "
                                                      "open a new one"))
            await ws.close(code=1008)
            return
        try:
            await ws.send_json(await run_in_threadpool(label, session, obj))
        except IeinError as exc:
            await ws.send_json(_error("invalid_message", str(exc).splitlines()[0]))

"""The service's live endpoint ``/stream`` (:mod:`iein.server.live`), through FastAPI's test
client: a session labels each utterance as a whole-conversation run of the same causal model
would, every bad message gets one error line and the session goes on, and the limits hold."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from iein.server.app import create_app
from iein.server.live import StreamLimits
from tests.test_stream import toy_recognizer


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    return toy_recognizer("iein", "glove-bigru", tmp_path_factory.mktemp("live"), name="live")


def _client(rec, **limits) -> TestClient:
    return TestClient(create_app(rec, stream_limits=StreamLimits(**limits)))


def test_a_session_labels_each_utterance_as_the_model_does(live):
    client = _client(live)
    assert client.get("/model").json()["streams"] is True
    turns = [("Ann", "w1 w2"), ("Bob", "w3"), ("Ann", "w4 w5 w6")]
    want = live.predict(turns)
    with client.websocket_connect("/stream") as ws:
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["labels"] == list(live.labels) and ready["steps"] == 3
        for i, (speaker, text) in enumerate(turns):
            ws.send_json({"speaker": speaker, "text": text})
            got = ws.receive_json()
            assert got["type"] == "label" and got["index"] == i and got["label"] == want[i]["label"]
            assert got["steps"] == want[i]["steps"]
        ws.send_json({"type": "close"})
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()


def test_bad_messages_get_one_error_each_and_the_session_goes_on(live):
    client = _client(live, max_message_bytes=200)
    bad = ['{"speaker": "Ann", ', '[1, 2]', '{"speaker": "Ann", "text": "w1", "mood": 1}',
           '{"speaker": "Ann", "text": 5}', '{"speaker": "", "text": "w1"}', '{"type": "reset"}',
           '{"speaker": "Ann", "text": "' + "w1 " * 100 + '"}']
    with client.websocket_connect("/stream") as ws:
        ws.receive_json()
        for raw in bad:
            ws.send_text(raw)
            err = ws.receive_json()
            assert err["type"] == "error" and err["error"] == "invalid_message", (raw, err)
            assert err["message"] and "\n" not in err["message"]
        ws.send_json({"speaker": "Ann", "text": "w1"})
        assert ws.receive_json()["index"] == 0  # nothing bad counted as an utterance


def test_limits_sessions_utterances_and_idle_time(live):
    client = _client(live, max_sessions=1, max_utterances=2, idle_seconds=0.5)
    with client.websocket_connect("/stream") as ws:
        ws.receive_json()
        with client.websocket_connect("/stream") as other:
            assert other.receive_json()["error"] == "too_many_sessions"
        for _ in range(2):
            ws.send_json({"speaker": "Ann", "text": "w1"})
            assert ws.receive_json()["type"] == "label"
        ws.send_json({"speaker": "Ann", "text": "w1"})
        assert ws.receive_json()["error"] == "session_full"
    with client.websocket_connect("/stream") as ws:  # the closed session freed its slot
        ws.receive_json()
        assert ws.receive_json()["error"] == "idle_timeout"  # silent for 0.5 s
    assert client.get("/health").json()["status"] == "ok"


def test_a_model_that_cannot_stream_says_so(tmp_path):
    offline = toy_recognizer("iein", "glove-bigru", tmp_path, causal=False)
    client = _client(offline)
    assert client.get("/model").json()["streams"] is False
    with client.websocket_connect("/stream") as ws:
        err = ws.receive_json()
        assert err["error"] == "not_streamable" and "not causal" in err["message"]

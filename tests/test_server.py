"""The HTTP service (`iein serve`): endpoints through FastAPI's test client, every limit,
malformed input, and a real uvicorn on loopback for what a test client cannot show
(a body refused without being read, the event loop free during inference)."""
from __future__ import annotations

import asyncio
import json
import re
import select
import socket
import threading
import time
import warnings
from pathlib import Path

import pytest

from iein.data.examples import TABLE5_EXAMPLE
import torch

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'iein[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'iein[serve]'")
pytest.importorskip("httpx", reason="the test client needs httpx")

with warnings.catch_warnings():  # starlette >= 1.10 prefers httpx2; httpx works the same
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from iein.cli import main as cli_main  # noqa: E402
from iein.recognizer import Recognizer  # noqa: E402
from iein.server import Limits, create_app  # noqa: E402
from iein.server.app import BodyLimitMiddleware, InferenceBatcher  # noqa: E402

torch.set_num_threads(1)

LIMITS = Limits(max_body_bytes=8192, max_utterances=12, max_utterance_chars=300, max_speaker_chars=40)

EXAMPLE = list(TABLE5_EXAMPLE)


def _conv(pairs=EXAMPLE) -> dict:
    return {"utterances": [{"speaker": s, "text": t} for s, t in pairs]}


@pytest.fixture(scope="module")
def model_path(tiny_meld_checkpoint: Path) -> Path:
    return tiny_meld_checkpoint


@pytest.fixture(scope="module")
def recognizer(model_path: Path) -> Recognizer:
    return Recognizer.load(model_path)


@pytest.fixture(scope="module")
def client(recognizer: Recognizer) -> TestClient:
    with TestClient(create_app(recognizer, LIMITS)) as c:
        yield c


def _assert_error(r, status: int, code: str, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and "\n" not in body["message"] and body["message"]
    if field is not None:
        assert body["message"].startswith(field + ":"), body
    return body


# --- happy path ---------------------------------------------------------------------------

def test_the_recognizer_and_the_fakes_have_every_member_the_service_uses(recognizer: Recognizer) -> None:
    from iein.server.labeller import Labeller

    members = set(Labeller.__annotations__) | {n for n in vars(Labeller) if not n.startswith("_")}
    assert {"labels", "predict_many", "stream_problem", "conversation"} <= members
    for obj in (recognizer, FakeLabeller()):
        missing = [m for m in members if not hasattr(obj, m)]
        assert not missing, (type(obj).__name__, missing)


def test_predict_matches_the_recognizer(client: TestClient, recognizer: Recognizer) -> None:
    r = client.post("/predict", json=_conv())
    assert r.status_code == 200, r.text
    body = r.json()
    expected = recognizer.predict(_conv())
    assert body["labels"] == list(recognizer.labels)
    assert body["steps"] == 3  # step 0 + T = 2 iterations
    assert len(body["utterances"]) == len(EXAMPLE)
    for got, want, (speaker, text) in zip(body["utterances"], expected, EXAMPLE):
        assert (got["speaker"], got["text"]) == (speaker, text)
        assert got["label"] == want["label"] == got["steps"][-1]
        assert got["steps"] == want["steps"]
        assert set(got["probs"]) == set(recognizer.labels)
        assert got["probs"] == pytest.approx(want["probs"], abs=1e-6)
        assert sum(got["probs"].values()) == pytest.approx(1.0, abs=1e-4)
        assert max(got["probs"], key=got["probs"].get) == got["label"]
        assert "gold" not in got


def test_predict_echoes_id_and_gold(client: TestClient) -> None:
    conv = {"id": "c7", "utterances": [{"speaker": "A", "text": "Great!", "label": "joy"},
                                      {"speaker": "B", "text": "Hm.", "extra": "ignored"}]}
    body = client.post("/predict", json=conv).json()
    assert body["id"] == "c7"
    assert body["utterances"][0]["gold"] == "joy"
    assert "gold" not in body["utterances"][1]


def test_limits_at_the_boundary_are_accepted(client: TestClient) -> None:
    conv = {"utterances": [{"speaker": "S" * 40, "text": "x" * 300}] + [{"speaker": "B", "text": ""}] * 11}
    assert len(json.dumps(conv)) <= LIMITS.max_body_bytes
    r = client.post("/predict", json=conv)
    assert r.status_code == 200, r.text
    assert len(r.json()["utterances"]) == 12


# --- limits -------------------------------------------------------------------------------

def test_too_many_utterances(client: TestClient) -> None:
    body = _assert_error(client.post("/predict", json=_conv(EXAMPLE + EXAMPLE[:3])), 422, "invalid_request",
                         "utterances")
    assert "13 utterances" in body["message"] and "limit of 12" in body["message"]


def test_too_long_utterance(client: TestClient) -> None:
    conv = _conv([("A", "hi"), ("B", "y" * 301)])
    body = _assert_error(client.post("/predict", json=conv), 422, "invalid_request", "utterances[1].text")
    assert "301 characters" in body["message"] and "limit of 300" in body["message"]


def test_too_long_speaker(client: TestClient) -> None:
    _assert_error(client.post("/predict", json=_conv([("S" * 41, "hi")])), 422, "invalid_request",
                  "utterances[0].speaker")


def test_body_over_the_limit_by_content_length(client: TestClient) -> None:
    conv = _conv([("A", "\N{GRINNING FACE}" * 290)] * 12)  # every field within its limits, the body not
    raw = json.dumps(conv, ensure_ascii=False).encode()  # 4 bytes a character: 14 KB
    assert len(raw) > LIMITS.max_body_bytes
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    body = _assert_error(r, 413, "body_too_large")
    assert str(len(raw)) in body["message"] and str(LIMITS.max_body_bytes) in body["message"]


def test_invalid_content_length(client: TestClient) -> None:
    r = client.post("/predict", content=b"{}", headers={"content-type": "application/json", "content-length": "-1"})
    assert r.status_code == 400


# --- malformed input ----------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b'{"utterances": [', b"{'utterances': []}", b"nope", b'{"utterances": [}]}'])
def test_malformed_json(client: TestClient, raw: bytes) -> None:
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    body = _assert_error(r, 400, "malformed_json")
    assert body["message"].startswith("malformed JSON")


@pytest.mark.parametrize("payload, field", [
    ({"utterances": [{"speaker": 1, "text": "hi"}]}, "utterances[0].speaker"),
    ({"utterances": [{"speaker": "A", "text": None}]}, "utterances[0].text"),
    ({"utterances": [{"speaker": "A", "text": ["hi"]}]}, "utterances[0].text"),
    ({"utterances": [{"speaker": "A"}]}, "utterances[0].text"),
    ({"utterances": [{"speaker": "A", "text": "hi", "label": 3}]}, "utterances[0].label"),
    ({"utterances": ["A: hi"]}, "utterances[0]"),
    ({"utterances": "A: hi"}, "utterances"),
    ({"utterances": []}, "utterances"),
    ({"utterances": [{"speaker": "", "text": "hi"}]}, "utterances[0].speaker"),
    ({"id": 5, "utterances": [{"speaker": "A", "text": "hi"}]}, "id"),
    ({"conversation": []}, "utterances"),
    ([{"speaker": "A", "text": "hi"}], "body"),
    ("hello", "body"),
])
def test_wrong_types(client: TestClient, payload, field: str) -> None:
    body = _assert_error(client.post("/predict", json=payload), 422, "invalid_request", field)
    assert body["errors"][0]["field"] == field


def test_conversation_rejected_by_the_recognizer(client: TestClient) -> None:
    _assert_error(client.post("/predict", json=_conv([("   ", "hi")])), 422, "invalid_conversation")
    body = _assert_error(client.post("/predict", json={"utterances": [{"speaker": "A", "text": "hi",
                                                                      "label": "bliss"}]}),
                         422, "invalid_conversation")
    assert "bliss" in body["message"]


def test_not_json(client: TestClient) -> None:
    r = client.post("/predict", content=b"Chandler: hi", headers={"content-type": "text/plain"})
    _assert_error(r, 415, "unsupported_media_type")
    r = client.post("/predict", data={"utterances": "x"})  # a form
    _assert_error(r, 415, "unsupported_media_type")


def test_empty_body(client: TestClient) -> None:
    _assert_error(client.post("/predict", headers={"content-type": "application/json"}), 422, "invalid_request",
                  "body")


def test_unknown_route_and_method(client: TestClient) -> None:
    _assert_error(client.get("/nope"), 404, "not_found")
    _assert_error(client.get("/predict"), 405, "method_not_allowed")
    # no endpoint serves files by a client-given path
    for path in ("/static/../app.py", "/static/index.html", "/static/app.py", "/static/%2e%2e/app.py"):
        assert client.get(path).status_code == 404, path


# --- other endpoints ----------------------------------------------------------------------

def test_health(client: TestClient, recognizer: Recognizer) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "labels": len(recognizer.labels)}


def test_model_card(client: TestClient, recognizer: Recognizer) -> None:
    body = client.get("/model").json()
    assert body["labels"] == list(recognizer.labels)
    assert body["steps"] == 3
    assert body["limits"] == {"max_body_bytes": 8192, "max_utterances": 12, "max_utterance_chars": 300,
                              "max_speaker_chars": 40}
    card = body["card"]
    assert card["dataset"] == "meld"
    assert card["model_config"]["iterations"] == 2
    assert "vocab" not in card and card["vocab_size"] > 0
    assert "weighted_f1" in card["dev"]["final"]


def test_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/predict", "/health", "/model"} <= set(spec["paths"])
    assert "/" not in spec["paths"] and "/static/app.js" not in spec["paths"]
    post = spec["paths"]["/predict"]["post"]
    assert {"200", "400", "413", "415", "422"} <= set(post["responses"])
    schemas = spec["components"]["schemas"]
    assert schemas["Conversation"]["properties"]["utterances"]["maxItems"] == 12
    assert schemas["Utterance"]["properties"]["text"]["maxLength"] == 300
    assert set(schemas["UtterancePrediction"]["required"]) >= {"speaker", "text", "label", "probs", "steps"}


_EXTERNAL = re.compile(r"""(https?:)?//[a-z0-9]|@import|url\(""", re.I)


def test_page_is_served_with_no_external_urls(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = r.text
    assert "<textarea" in page and "Recognize emotions" in page
    for speaker, text in EXAMPLE:  # the paper's example is preloaded
        assert f"{speaker}: {text}" in page
    refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    assert "/static/app.js" in refs and "/static/app.css" in refs
    for ref in refs:
        if ref.startswith("data:"):
            continue
        assert ref.startswith("/") and not ref.startswith("//"), ref
        assert client.get(ref).status_code == 200, ref
    for text in (page, client.get("/static/app.js").text, client.get("/static/app.css").text):
        assert not _EXTERNAL.search(text), _EXTERNAL.search(text)
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")


def test_docs_page_is_local(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200 and "POST /predict" in r.text
    assert not re.search(r"https?://", r.text)


# --- the body limit, without reading the body ----------------------------------------------

def test_chunked_body_refused_without_reading_it_all() -> None:
    """A body with no Content-Length (chunked) is read only up to the limit: the ASGI
    middleware stops asking for chunks and answers 413."""
    limit, chunk, n_chunks = 4096, 1024, 1000
    calls = 0
    reached_app = False

    async def app(scope, receive, send):  # never reached
        nonlocal reached_app
        reached_app = True

    async def receive():
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": b"x" * chunk, "more_body": calls < n_chunks}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(BodyLimitMiddleware(app, limit)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"] == "body_too_large"
    assert calls == limit // chunk + 1  # 5 of the 1000 chunks
    assert not reached_app


def test_declared_length_refused_before_reading() -> None:
    calls = 0

    async def receive():
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-length", b"4097")]}
    asyncio.run(BodyLimitMiddleware(lambda *a: None, 4096)(scope, receive, send))
    assert sent[0]["status"] == 413 and calls == 0


class LiveServer:
    """uvicorn on 127.0.0.1, an ephemeral port, in a thread."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def _read_response(s: socket.socket, timeout: float = 10.0) -> bytes:
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        part = s.recv(65536)
        if not part:
            break
        data += part
    return data


def test_live_server_refuses_a_huge_declared_body_without_waiting_for_it(recognizer: Recognizer) -> None:
    with LiveServer(create_app(recognizer, LIMITS)) as live:
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 500000000\r\n\r\n" + b"{" * 1000)
            t0 = time.monotonic()
            head = _read_response(s)
            assert head.startswith(b"HTTP/1.1 413"), head[:200]
            assert time.monotonic() - t0 < 5  # answered without the other 499,999,000 bytes


def test_live_server_stops_reading_a_chunked_body_at_the_limit(recognizer: Recognizer) -> None:
    chunk = b"x" * 1024
    with LiveServer(create_app(recognizer, LIMITS)) as live:
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            sent, answered = 0, False
            try:
                for _ in range(10_000):  # up to 10 MiB, far over the 8 KiB limit
                    s.sendall(b"400\r\n" + chunk + b"\r\n")
                    sent += len(chunk)
                    if select.select([s], [], [], 0.005)[0]:
                        answered = True
                        break
            except (BrokenPipeError, ConnectionResetError):
                answered = True
            assert answered, "the server kept reading"
            assert sent < 100 * LIMITS.max_body_bytes
            head = _read_response(s)
            assert head.startswith(b"HTTP/1.1 413"), head[:200]


class FakeLabeller:
    """The service's whole contract (``iein.server.labeller.Labeller``) with fixed answers."""

    labels = ("neutral", "joy")
    steps = 2
    source = "fake"
    streams = False
    card = {"dataset": "fake"}

    def conversation(self, obj):
        return obj

    def predict(self, conversation):
        return [{"speaker": u["speaker"], "text": u["text"], "label": "joy", "probs": {"neutral": 0.4, "joy": 0.6},
                 "steps": ["neutral", "joy"]} for u in conversation["utterances"]]

    def predict_many(self, conversations, batch_size=32):
        return [self.predict(c) for c in conversations]

    def stream_problem(self):
        return "this fake cannot stream"

    def stream(self):
        raise AssertionError("never called: stream_problem refuses")


class SlowRecognizer(FakeLabeller):
    def __init__(self) -> None:
        self.started = threading.Event()

    def predict(self, conversation):
        self.started.set()
        time.sleep(1.5)
        return super().predict(conversation)


def test_inference_runs_off_the_event_loop() -> None:
    """While one request is inside the model, /health still answers at once."""
    import http.client

    slow = SlowRecognizer()
    with LiveServer(create_app(slow, LIMITS)) as live:
        result: dict = {}

        def call_predict() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=20)
            conn.request("POST", "/predict", body=json.dumps(_conv(EXAMPLE[:2])),
                         headers={"Content-Type": "application/json"})
            result["status"] = conn.getresponse().status
            conn.close()

        t = threading.Thread(target=call_predict)
        t.start()
        assert slow.started.wait(10)
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        assert time.monotonic() - t0 < 1.0
        conn.close()
        t.join(20)
        assert result["status"] == 200


# --- batching of concurrent requests -------------------------------------------------------

class GatedRecognizer(FakeLabeller):
    """predict_many waits at a gate, so that requests queue behind the first call."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.batches: list[int] = []

    def predict(self, conv):
        if conv["utterances"][0]["text"] == "boom":
            raise ValueError("bad conversation")
        return super().predict(conv)

    def predict_many(self, convs, batch_size=32):
        self.gate.wait(10)
        self.batches.append(len(convs))
        return [self.predict(c) for c in convs]


def test_batcher_labels_queued_requests_together_and_isolates_failures() -> None:
    rec = GatedRecognizer()
    batcher = InferenceBatcher(rec, max_batch=32)
    results: dict[int, object] = {}

    def call(i: int) -> None:
        text = "boom" if i == 3 else f"utterance {i}"
        try:
            results[i] = batcher.predict({"utterances": [{"speaker": f"S{i}", "text": text}]})
        except ValueError as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    threads[0].start()
    time.sleep(0.2)  # the first request is inside predict_many, at the gate
    for t in threads[1:]:
        t.start()
    time.sleep(0.3)  # the other seven queue
    rec.gate.set()
    for t in threads:
        t.join(10)
    batcher.close()
    assert rec.batches[0] == 1 and sum(rec.batches) >= 8 and max(rec.batches) > 1  # queued ones went together
    assert isinstance(results[3], ValueError)  # the bad one fails alone...
    for i in set(range(8)) - {3}:  # ...and every other request gets its own answer
        assert results[i][0]["speaker"] == f"S{i}" and results[i][0]["text"] == f"utterance {i}"


def test_concurrent_requests_match_single_predictions(recognizer: Recognizer, shared_data: Path) -> None:
    """16 clients at once through a real server: every answer is that conversation's own."""
    import http.client

    from iein.data.registry import load_corpus

    convs = [{"utterances": [{"speaker": u.speaker, "text": u.text} for u in c.utterances[:12]]}
             for c in load_corpus("meld", shared_data / "meld")["test"][:32]]
    expected = [recognizer.predict(c) for c in convs]
    got: dict[int, list] = {}
    with LiveServer(create_app(recognizer, LIMITS)) as live:
        def client(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
            for i in range(k, len(convs), 16):
                conn.request("POST", "/predict", body=json.dumps(convs[i]),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                assert resp.status == 200
                got[i] = json.loads(resp.read())["utterances"]
            conn.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sorted(got) == list(range(len(convs)))
    for i, want in enumerate(expected):
        assert [r["steps"] for r in got[i]] == [r["steps"] for r in want]
        assert [r["text"] for r in got[i]] == [r["text"] for r in want]
        for a, b in zip(got[i], want):
            assert a["probs"] == pytest.approx(b["probs"], abs=1e-5)


# --- command line -------------------------------------------------------------------------

def test_cli_serve_reports_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--model", str(tmp_path / "none.safetensors"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not found" in err and len(err.strip().splitlines()) == 1


def test_cli_serve_rejects_bad_limits(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--model", str(model_path), "--max-utterances", "0"]) == 2
    assert "max_utterances" in capsys.readouterr().err


def test_the_service_accepts_the_same_utterance_length_as_every_command(recognizer: Recognizer) -> None:
    """One character limit everywhere (the readers' 1,000,000), refused in one line; the
    service's own bound on top is the request body (1 MiB by default)."""
    from iein.data.generic import MAX_UTTERANCE_CHARS

    assert Limits().max_utterance_chars == MAX_UTTERANCE_CHARS
    with TestClient(create_app(recognizer)) as c:
        long = c.post("/predict", json={"utterances": [{"speaker": "A", "text": "okay " * 20_000}]})
        assert long.status_code == 200 and long.json()["utterances"][0]["text"] == ("okay " * 20_000).strip()
        huge = c.post("/predict", json={"utterances": [{"speaker": "A", "text": "x" * (MAX_UTTERANCE_CHARS + 1)}]})
        assert huge.status_code == 422 and "1000000" in huge.json()["message"], huge.json()["message"]
        over = c.post("/predict", json={"utterances": [{"speaker": "A", "text": "x" * (1 << 20)}]})
        assert over.status_code == 413 and over.json()["error"] == "body_too_large"

"""The HTTP service: ``POST /predict``, ``GET /health``, ``GET /model``, the page at ``/``, and
the live WebSocket ``/stream`` (:mod:`iein.server.live`).

Design points:

* Every limit answers a 4xx JSON body ``{"error": code, "message": one line, ...}``:
  413 for a body over :attr:`Limits.max_body_bytes` (refused from ``Content-Length`` before
  reading anything, or while streaming a body sent without one: reading stops at the
  limit), 400 ``malformed_json`` for a body that is not valid JSON (including invalid UTF-8
  and nesting too deep to parse), 415 for a body that is not JSON, 422 for wrong types,
  too many utterances, too long an utterance or speaker, or a conversation the recognizer
  rejects.
* No endpoint reads or writes a path given by a client: the page's three assets are read
  from the package once, when the app is built, and served from memory by fixed routes.
* ``/predict`` is a plain ``def`` endpoint: it validates in the threadpool and waits there
  while one inference thread labels it, together with whatever other conversations queued
  meanwhile (:class:`InferenceBatcher`), so the event loop stays free for other requests
  (health checks, the page, new connections).
* No CDN anywhere: the page and the ``/docs`` page are served by the package, under a
  Content-Security-Policy that allows only this origin.
"""
import concurrent.futures
import contextlib
import gc
import html
import json
import math
import queue
import sys
import threading
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Callable, Optional, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..data.examples import TABLE5_EXAMPLE
from ..data.generic import MAX_UTTERANCE_CHARS
from ..errors import ConfigError, IeinError
from ..utils import plural
from .labeller import Labeller
from .live import StreamLimits, add_stream_route

__all__ = ["Labeller", "Limits", "create_app", "serve", "BodyLimitMiddleware", "InferenceBatcher", "LOOPBACK_HOSTS"]


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

#: Only this origin, no inline code: the page and /docs load nothing from anywhere else.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
                 415: "unsupported_media_type", 422: "invalid_request", 500: "internal_error"}


@dataclass(frozen=True)
class Limits:
    """What one request may hold.  Every limit is answered with a 4xx JSON error."""

    #: Request body, in bytes (checked from Content-Length, and while reading).
    max_body_bytes: int = 1 << 20
    #: Utterances in one conversation.
    max_utterances: int = 500
    #: Characters of one utterance's text: the readers' limit, as in every command (a request
    #: is also bounded by ``max_body_bytes``).
    max_utterance_chars: int = MAX_UTTERANCE_CHARS
    #: Characters of one speaker name.
    max_speaker_chars: int = 200

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"server limit {name!r} must be a positive integer, got {value!r}")


# --- errors -----------------------------------------------------------------------------

def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"Connection": "close"} if status == 413 else None
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status, headers=headers)


async def _send_error(send: Callable, status: int, code: str, message: str) -> None:
    """An error answered straight from ASGI (before the app runs); closes the connection,
    because the rest of the body is never read."""
    body = json.dumps({"error": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_body_bytes`` without reading them.

    A declared ``Content-Length`` over the limit is refused before one byte of the body is
    read; a body without one (chunked) is read only up to the limit, then refused.  The
    accepted body (at most the limit) is handed to the app in one piece.
    """

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        lengths = [v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"]
        if lengths:
            try:
                declared = {int(v) for v in lengths}
                if len(declared) != 1 or min(declared) < 0:
                    raise ValueError
            except ValueError:
                await _send_error(send, 400, "bad_request", "invalid Content-Length header")
                return
            (n,) = declared
            if n > limit:
                await _send_error(send, 413, "body_too_large",
                                  f"request body of {plural(n, 'byte')} is over the limit of {plural(limit, 'byte')}")
                return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await _send_error(send, 413, "body_too_large",
                                  f"request body is over the limit of {plural(limit, 'byte')} "
                                  f"(stopped reading at {total})")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MalformedJSON(StarletteHTTPException):
    """A body that ``json.loads`` cannot even tokenize (invalid UTF-8, nesting deeper than
    the parser's recursion limit): answered as ``malformed_json`` like any syntax error,
    not with FastAPI's generic "There was an error parsing the body"."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=400, detail=message)


def _parse_json_body(body: bytes) -> Any:
    """``json.loads(body)`` (what Starlette does, encoding detection included), with the two
    failures that are not a :class:`json.JSONDecodeError` turned into :class:`MalformedJSON`.
    A JSONDecodeError passes through: FastAPI reports it as ``json_invalid`` with its position."""
    try:
        return json.loads(body)
    except UnicodeDecodeError as e:
        raise MalformedJSON(f"malformed JSON at byte {e.start}: not valid {e.encoding.upper()} "
                            f"(byte 0x{body[e.start]:02x})") from None
    except RecursionError:
        raise MalformedJSON("malformed JSON: nested too deeply") from None


class _JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = _parse_json_body(await self.body())
        return self._json


class _JSONRoute(APIRoute):
    """Routes whose JSON body is parsed by :func:`_parse_json_body` (FastAPI's documented
    custom Request/APIRoute hook)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(_JSONRequest(request.scope, request.receive))

        return route_handler


def _field(loc: Any) -> str:
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _message(err: dict) -> str:
    """Pydantic's message, said in terms of the service's limits where one was hit."""
    kind, ctx, value = err.get("type"), err.get("ctx") or {}, err.get("input")
    limit = ctx.get("max_length")
    if kind == "too_long" and limit is not None and isinstance(value, list):
        return f"{plural(len(value), 'utterance')}, more than the limit of {limit}"
    if kind == "string_too_long" and limit is not None and isinstance(value, str):
        return f"{plural(len(value), 'character')}, more than the limit of {limit}"
    return str(err.get("msg", "invalid"))


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --- schemas ----------------------------------------------------------------------------

class FieldError(BaseModel):
    field: str
    message: str
    type: str


class ErrorResponse(BaseModel):
    error: str = Field(description="machine-readable code, e.g. body_too_large, malformed_json")
    message: str = Field(description="one line for a person")
    errors: Optional[list[FieldError]] = None


class UtterancePrediction(BaseModel):
    speaker: str
    text: str
    label: str = Field(description="the prediction: the label of the last step")
    probs: dict[str, float] = Field(description="class probabilities of the last step")
    steps: list[str] = Field(description="label at step 0 (initial prediction) ... T (final)")
    gold: Optional[str] = Field(None, description="the gold label, when the request gave one")
    note: Optional[str] = Field(None, description="present when the text is empty (or was only "
                                "whitespace): 'empty text: labelled from context only'")


class PredictionResponse(BaseModel):
    id: Optional[str] = None
    labels: list[str] = Field(description="the model's label set")
    steps: int = Field(description="steps per utterance: 1 + T iterations")
    utterances: list[UtterancePrediction]


def _request_models(limits: Limits) -> type[BaseModel]:
    class Utterance(BaseModel):
        model_config = ConfigDict(extra="ignore")
        speaker: StrictStr = Field(min_length=1, max_length=limits.max_speaker_chars)
        text: StrictStr = Field(max_length=limits.max_utterance_chars)
        label: Optional[StrictStr] = Field(None, description="optional gold label, echoed as 'gold'")

    class Conversation(BaseModel):
        """One conversation in the generic layout: ``{"id"?, "utterances": [...]}``."""

        model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"utterances": [
            {"speaker": speaker, "text": text} for speaker, text in TABLE5_EXAMPLE[:2]
        ]}]})
        id: Optional[StrictStr] = Field(None, max_length=200)
        utterances: list[Utterance] = Field(min_length=1, max_length=limits.max_utterances)

    return Conversation


# --- inference --------------------------------------------------------------------------

class InferenceBatcher:
    """One inference thread that labels, in one model call, every conversation that queued
    while the previous call ran (up to ``max_batch``).

    Under load this amortises the model's per-call cost over concurrent requests (about 3x
    the throughput at 16 clients); when idle a request runs at once, alone, with no added
    wait.  Request threads block on a future, so the event loop is never involved.  A
    batch that fails is retried one conversation at a time, so one bad request never fails
    another.
    """

    def __init__(self, recognizer: Labeller, max_batch: int = 32) -> None:
        self.recognizer = recognizer
        self.max_batch = max_batch
        self._queue: "queue.SimpleQueue[tuple[Any, concurrent.futures.Future] | None]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def predict(self, conversation: Any) -> list[dict[str, Any]]:
        conversation = self.recognizer.conversation(conversation)  # here: errors stay with their request
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the service is shutting down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="iein-inference", daemon=True)
                self._thread.start()
            self._queue.put((conversation, future))
        return future.result()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._label(batch)
            if stop:
                return

    def _label(self, batch: list[tuple[Any, concurrent.futures.Future]]) -> None:
        try:
            results = list(self.recognizer.predict_many([conv for conv, _ in batch], batch_size=len(batch)))
            if len(results) != len(batch):
                raise RuntimeError("predict_many returned a wrong number of results")
        except Exception:
            for conv, future in batch:
                try:
                    future.set_result(self.recognizer.predict(conv))
                except Exception as exc:  # noqa: BLE001 - handed to the request's thread
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            future.set_result(result)


# --- the app ----------------------------------------------------------------------------

def _read_asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def create_app(recognizer: Labeller, limits: Limits | None = None,
               stream_limits: StreamLimits | None = None) -> FastAPI:
    """The service around ``recognizer`` (see :class:`Labeller`); ``/stream`` labels live
    conversations when its model is causal (:mod:`iein.server.live`)."""
    from ..output_formats import OUTPUT_DIGITS, add_notes, round_probs  # here: it imports torch

    limits = limits or Limits()
    labels = [str(x) for x in recognizer.labels]
    steps = recognizer.steps
    model_info = _finite({
        "source": str(recognizer.source) or None,
        "labels": labels,
        "steps": steps,
        "limits": asdict(limits),
        "streams": bool(recognizer.streams),
        "card": dict(recognizer.card),
    })
    page = _read_asset("index.html")
    assets = {name: _read_asset(name) for name in _ASSETS}
    Conversation = _request_models(limits)
    errors_doc = {
        400: {"model": ErrorResponse, "description": "malformed JSON"},
        413: {"model": ErrorResponse, "description": f"body over {limits.max_body_bytes} bytes"},
        415: {"model": ErrorResponse, "description": "body is not application/json"},
        422: {"model": ErrorResponse, "description": "wrong types, a limit, or an invalid conversation"},
    }

    batcher = InferenceBatcher(recognizer)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(
        lifespan=lifespan,
        title="IEIN emotion recognition",
        version=__version__,
        description=(
            "Iterative Emotion Interaction Network (COLING 2020): one emotion per utterance, "
            "with the label of every iteration step (step 0 = initial prediction)."
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.router.route_class = _JSONRoute  # the routes below parse JSON with _parse_json_body
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=limits.max_body_bytes)
    add_stream_route(app, recognizer, stream_limits or StreamLimits(), limits.max_utterance_chars,
                     limits.max_speaker_chars)

    _add_error_handlers(app)

    @app.post("/predict", response_model=PredictionResponse, response_model_exclude_none=True,
              responses=errors_doc, summary="Label every utterance of one conversation")
    def predict(conversation: Conversation) -> dict[str, Any]:  # type: ignore[valid-type]
        """A plain ``def``: runs in the threadpool, waiting there for the inference thread,
        so the event loop stays responsive."""
        obj = conversation.model_dump(exclude_none=True)  # type: ignore[attr-defined]
        rows = add_notes([dict(row) for row in batcher.predict(obj)])  # the CLI's notes
        for row in rows:  # and its rounding (iein.recognizer.OUTPUT_DIGITS)
            row["probs"] = dict(zip(row["probs"], round_probs(list(row["probs"].values()), OUTPUT_DIGITS)))
        n_steps = len(rows[0]["steps"]) if rows else (steps or 0)
        return {"id": obj.get("id"), "labels": labels, "steps": n_steps, "utterances": rows}

    @app.get("/health", summary="Liveness: the model is loaded")
    def health() -> dict[str, Any]:
        return {"status": "ok", "labels": len(labels)}

    @app.get("/model", summary="The model card: labels, steps, limits, training metadata and scores")
    def model() -> dict[str, Any]:
        return model_info

    _add_page_routes(app, page, assets)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as a one-line JSON body ``{"error", "message"}`` (module doc)."""
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = list(exc.errors())
        bad_json = next((e for e in errs if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            loc = bad_json.get("loc", ())
            where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
            reason = (bad_json.get("ctx") or {}).get("error", "JSON decode error")
            return _error(400, "malformed_json", f"malformed JSON{where}: {reason}")
        if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errs):
            return _error(422, "invalid_request",
                          'body: empty; send a JSON object {"utterances": [{"speaker": ..., "text": ...}, ...]}')
        ctype = request.headers.get("content-type", "")
        media = ctype.split(";", 1)[0].strip().lower()
        if not (media == "application/json" or media.endswith("+json")):
            return _error(415, "unsupported_media_type",
                          f"send the conversation as Content-Type: application/json (got {ctype or 'none'})")
        fields = [{"field": _field(e.get("loc", ())), "message": _message(e), "type": str(e.get("type", ""))}
                  for e in errs[:20]]
        first = fields[0] if fields else {"field": "body", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}"
        if len(errs) > 1:
            message += f" (and {len(errs) - 1} more)"
        return _error(422, "invalid_request", message, errors=fields)

    @app.exception_handler(IeinError)
    async def _iein_error(request: Request, exc: IeinError) -> JSONResponse:
        return _error(422, "invalid_conversation", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "malformed_json" if isinstance(exc, MalformedJSON) else _STATUS_CODES.get(exc.status_code, "error")
        response = _error(exc.status_code, code, str(exc.detail))
        for k, v in (exc.headers or {}).items():
            response.headers[k] = v
        return response

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug
        print(f"iein serve: internal error on {request.url.path}: {exc!r}", file=sys.stderr)
        return _error(500, "internal_error", "internal error (see the server log)")


def _add_page_routes(app: FastAPI, page: bytes, assets: dict[str, bytes]) -> None:
    """The page, its two assets and the API page, served from memory (module doc)."""
    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    @app.get("/static/app.js", include_in_schema=False)
    def app_js() -> Response:
        return Response(assets["app.js"], media_type=_ASSETS["app.js"], headers=_PAGE_HEADERS)

    @app.get("/static/app.css", include_in_schema=False)
    def app_css() -> Response:
        return Response(assets["app.css"], media_type=_ASSETS["app.css"], headers=_PAGE_HEADERS)

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return Response(_docs_page(app.openapi()), media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


def _docs_page(spec: dict[str, Any]) -> str:
    """A plain HTML rendering of the OpenAPI description (FastAPI's Swagger UI loads from a CDN)."""
    e = html.escape
    info = spec.get("info", {})
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<link rel='icon' href='data:,'><link rel='stylesheet' href='/static/app.css'>",
        f"<title>{e(info.get('title', 'API'))}: API</title></head><body><main class='docs'>",
        f"<h1>{e(info.get('title', 'API'))} <small>{e(str(info.get('version', '')))}</small></h1>",
        f"<p>{e(info.get('description', ''))}</p>",
        "<p>Machine-readable description: <a href='/openapi.json'>/openapi.json</a> (OpenAPI "
        f"{e(str(spec.get('openapi', '')))}). The page: <a href='/'>/</a>.</p>",
    ]
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            parts.append(f"<section class='op'><h2><code>{e(method.upper())} {e(path)}</code></h2>")
            parts.append(f"<p>{e(op.get('summary', ''))}</p>")
            if op.get("description"):
                parts.append(f"<p>{e(op['description'])}</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                parts.append(f"<p>Request body (application/json): <code>{e(json.dumps(body))}</code></p>")
            parts.append("<ul>")
            for status, resp in op.get("responses", {}).items():
                schema = resp.get("content", {}).get("application/json", {}).get("schema")
                ref = f" <code>{e(json.dumps(schema))}</code>" if schema else ""
                parts.append(f"<li><b>{e(str(status))}</b> {e(resp.get('description', ''))}{ref}</li>")
            parts.append("</ul></section>")
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        parts.append("<h2>Schemas</h2>")
        for name, schema in schemas.items():
            parts.append(f"<h3 id='{e(name)}'>{e(name)}</h3><pre>{e(json.dumps(schema, indent=2))}</pre>")
    parts.append("</main></body></html>")
    return "".join(parts)


def serve(
    model: str | Sequence[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    threads: int | None = None,
    access_log: bool = False,
    device: str = "cpu",
    stream_limits: StreamLimits | None = None,
    runtime: str = "auto",
) -> None:
    """Load ``model`` (on ``device``, transformer encoders on ``runtime``; None: the default
    shipped model, :func:`iein.shipped.default_model`) and serve it with uvicorn until
    interrupted (``iein serve``)."""
    import torch
    import uvicorn

    from ..recognizer import Recognizer
    from ..shipped import default_model

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {port}")
    if model is None:
        model, why = default_model()
        print(f"iein serve: {why}", file=sys.stderr)
    recognizer = Recognizer.load(model, device=device, runtime=runtime)
    app = create_app(recognizer, limits, stream_limits)
    # The model and the interpreter's start-up objects live for the whole process: move them
    # out of the cyclic GC's view so that full collections (long pauses in the latency
    # tail under load) have less to walk.
    gc.collect()
    gc.freeze()
    if host not in LOOPBACK_HOSTS:
        print(f"warning: listening on {host}, reachable from other machines; the service has no "
              "authentication", file=sys.stderr)
    live = "live sessions on ws://.../stream" if recognizer.streams else "no live mode (the model is not causal)"
    print(f"iein serve: model {model} ({len(recognizer.labels)} labels) on http://{host}:{port}/; {live}",
          file=sys.stderr)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info",
                server_header=False, proxy_headers=False)

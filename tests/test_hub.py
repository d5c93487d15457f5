"""Hub ids (:mod:`iein.hub`) against a local stand-in for the Hugging Face hub: an HTTP server
answering the file endpoint ``huggingface_hub`` downloads from (``HEAD``/``GET
/{org}/{name}/resolve/{revision}/{file}``, with the hub's headers and error codes), pointed at
with ``HF_ENDPOINT``.  No test reaches the network."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch

pytest.importorskip("huggingface_hub")

from iein.checkpoint import save_checkpoint  # noqa: E402
from iein.cli import main  # noqa: E402
from iein.errors import CheckpointError, ConfigError, IeinError  # noqa: E402
from iein.recognizer import Recognizer  # noqa: E402
from iein.sharing import export_model  # noqa: E402
from tests.test_models import LABELS, toy_model  # noqa: E402
from tests.test_transformer_encoder import CONV, make_tiny_bert  # noqa: E402


class FakeHub:
    """Repositories ``{repo_id: {"refs": {name: commit}, "commits": {commit: {file: bytes}}}}``;
    ``cut`` names files whose body is cut off half way; ``gets`` counts the GETs per file."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.cut: set[str] = set()
        self.gets: dict[str, int] = {}

    def publish(self, repo_id: str, files: dict[str, bytes], ref: str = "main") -> str:
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        commit = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items()))
                              .encode() + repo_id.encode()).hexdigest()
        repo["commits"][commit] = dict(files)
        repo["refs"][ref] = commit
        return commit

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        parts = unquote(path.split("?", 1)[0]).lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, {"X-Error-Code": "RepoNotFound"}, b""
        repo_id, rev, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        repo = self.repos.get(repo_id)
        if repo is None:
            return 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        commit = repo["refs"].get(rev, rev)
        if commit not in repo["commits"]:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
        data = repo["commits"][commit].get(name)
        if data is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}, b""
        etag = hashlib.sha256(data).hexdigest()
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Content-Length": str(len(data)),
                     "Content-Type": "application/octet-stream"}, data


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeHub()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, body: bool) -> None:
            status, headers, data = fake.answer(self.path)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if status != 200:
                self.send_header("Content-Length", "0")
            self.end_headers()
            if body and status == 200:
                name = unquote(self.path).rsplit("/", 1)[-1]
                fake.gets[name] = fake.gets.get(name, 0) + 1
                self.wfile.write(data[: len(data) // 2] if name in fake.cut else data)
                if name in fake.cut:
                    self.close_connection = True

        def do_HEAD(self) -> None:  # noqa: N802
            self._reply(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._reply(body=True)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("IEIN_CACHE_DIR", str(tmp_path / "iein-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield fake
    server.shutdown()
    server.server_close()


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _iein_on(model_id: str, tmp_path: Path, **encoder):
    """A small IEIN on the transformer encoder ``model_id`` (training builds it this way)."""
    from iein.encoders.transformer import TransformerEncoder, TransformerEncoderConfig
    from iein.models.registry import build_model

    cfg = TransformerEncoderConfig(model=model_id, cache_dir=str(tmp_path / "features"), **encoder)
    feat, derived = TransformerEncoder.build_featurizer(cfg, [CONV], log=lambda _: None)
    torch.manual_seed(0)
    return build_model("iein", {"n_labels": 3, "emotion_dim": 3}, "transformer", cfg.replace(**derived),
                       featurizer=feat).eval()


def test_an_encoder_from_a_hub_id_records_its_commit_and_reloads_exactly_it(hub, tmp_path):
    first = hub.publish("tiny-org/bert", _folder_files(make_tiny_bert(tmp_path / "b0", seed=0)))
    model = _iein_on("tiny-org/bert", tmp_path)
    cfg = model.utterance_encoder.config
    assert cfg.revision == first and cfg.base_sha256
    ckpt = save_checkpoint(tmp_path / "m.safetensors", model, LABELS, dataset="unit")
    # main moves on to other weights: the checkpoint still loads the commit it was trained on
    second = hub.publish("tiny-org/bert", _folder_files(make_tiny_bert(tmp_path / "b1", seed=1)))
    gets = dict(hub.gets)
    rec = Recognizer.load(ckpt)
    assert rec.model.utterance_encoder.config.revision == first
    assert hub.gets == gets  # a cache hit: nothing downloaded again
    turns = [(u.speaker, u.text) for u in CONV.utterances]
    before = rec.predict(turns)
    assert _iein_on("tiny-org/bert", tmp_path).utterance_encoder.config.revision == second  # new training
    # pinned in advance, by branch name: resolved to that branch's commit
    hub.publish("tiny-org/bert", _folder_files(tmp_path / "b0"), ref="v1")
    assert _iein_on("tiny-org/bert", tmp_path, revision="v1").utterance_encoder.config.revision == first
    assert Recognizer.load(ckpt).predict(turns) == before


def test_offline_uses_the_cache_and_says_so_when_it_cannot(hub, tmp_path, monkeypatch):
    hub.publish("tiny-org/bert", _folder_files(make_tiny_bert(tmp_path / "b0")))
    ckpt = save_checkpoint(tmp_path / "m.safetensors", _iein_on("tiny-org/bert", tmp_path), LABELS, dataset="unit")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gets = sum(hub.gets.values())
    Recognizer.load(ckpt)  # all in the cache
    assert sum(hub.gets.values()) == gets
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(IeinError, match="not in the local cache and HF_HUB_OFFLINE is set") as err:
        Recognizer.load(ckpt)
    assert "tiny-org/bert" in str(err.value) and "\n" not in str(err.value)


def test_a_typo_a_missing_revision_or_a_repository_without_a_model_is_one_line(hub, tmp_path):
    hub.publish("tiny-org/bert", _folder_files(make_tiny_bert(tmp_path / "b0")))
    hub.publish("tiny-org/notes", {"README.md": b"# just notes\n"})
    cases = [(lambda: _iein_on("tiny-org/bret", tmp_path), "hub model tiny-org/bret: no such repository"),
             (lambda: _iein_on("tiny-org/bert", tmp_path, revision="nope"), "revision 'nope' does not exist"),
             (lambda: _iein_on("tiny-org/notes", tmp_path), "the repository has no config.json"),
             (lambda: Recognizer.load("tiny-org/bert"), "not an iein model repository"),
             (lambda: Recognizer.load("tiny-org/bert@nope"), "revision 'nope' does not exist")]
    for call, message in cases:
        with pytest.raises(IeinError) as err:
            call()
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_download_cut_off_leaves_nothing_half_written(hub, tmp_path):
    hub.publish("tiny-org/bert", _folder_files(make_tiny_bert(tmp_path / "b0")))
    hub.cut.add("model.safetensors")
    with pytest.raises(ConfigError, match="downloading model.safetensors failed") as err:
        _iein_on("tiny-org/bert", tmp_path)
    assert "\n" not in str(err.value)
    cache = tmp_path / "hf-cache" / "models--tiny-org--bert"
    assert not list(cache.rglob("*.incomplete"))
    assert not list(cache.rglob("model.safetensors"))
    hub.cut.clear()  # the next try downloads it whole
    assert _iein_on("tiny-org/bert", tmp_path).utterance_encoder.config.revision


def _live_checkpoint(tmp_path: Path) -> Path:
    model = toy_model("iein", "glove-bigru", seed=3, causal=True).eval()
    return save_checkpoint(tmp_path / "live.safetensors", model, LABELS, dataset="unit")


def test_an_iein_model_shared_on_the_hub_loads_predicts_and_serves_as_the_file_does(hub, tmp_path, capsys):
    ckpt = _live_checkpoint(tmp_path)
    folder = export_model(str(ckpt), tmp_path / "repo", "me/live")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "iein.safetensors"]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: iein\n") and 'Recognizer.load("me/live")' in card
    with pytest.raises(ConfigError, match="exists"):
        export_model(str(ckpt), folder)
    commit = hub.publish("me/live", _folder_files(folder))
    turns = [("Ann", "w1 w2"), ("Bob", "w3")]
    want = Recognizer.load(ckpt).predict(turns)
    assert Recognizer.load("me/live").predict(turns) == want
    assert Recognizer.load(f"me/live@{commit}").predict(turns) == want
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"utterances": [{"speaker": s, "text": t} for s, t in turns]}) + "\n")
    assert main(["predict", "--model", "me/live", str(jsonl)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [u["label"] for u in got["utterances"]] == [w["label"] for w in want]


def test_a_tampered_file_on_the_hub_is_refused(hub, tmp_path, monkeypatch):
    folder = export_model(str(_live_checkpoint(tmp_path)), tmp_path / "repo")
    files = _folder_files(folder)
    data = bytearray(files["iein.safetensors"])
    data[-10] ^= 0x01  # one bit of a weight
    hub.publish("me/live", {**files, "iein.safetensors": bytes(data)})
    with pytest.raises(CheckpointError) as err:
        Recognizer.load("me/live")
    assert "\n" not in str(err.value)
    # the encoder's weights: the same commit serving other bytes than the checkpoint was trained on
    commit = hub.publish("tiny-org/bert", _folder_files(make_tiny_bert(tmp_path / "b0", seed=0)))
    ckpt = save_checkpoint(tmp_path / "m.safetensors", _iein_on("tiny-org/bert", tmp_path), LABELS, dataset="unit")
    other = _folder_files(make_tiny_bert(tmp_path / "b1", seed=1))
    hub.repos["tiny-org/bert"]["commits"][commit] = other
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "fresh-cache"))
    with pytest.raises(CheckpointError, match="weights sha256"):
        Recognizer.load(ckpt)


def test_paths_and_names_are_not_taken_for_hub_ids(tmp_path, monkeypatch):
    from iein.hub import parse_hub_id

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert parse_hub_id("org/name") == ("org/name", None)
    assert parse_hub_id("org/name@v1.0") == ("org/name", "v1.0")
    for text in ("meld", "runs/model", "org/model.safetensors", "../x/y", "/abs/path", "a/b/c"):
        assert parse_hub_id(text) is None, text
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Recognizer.load("runs/model")


@pytest.mark.slow  # huggingface_hub retries a refused connection for about 25 s
def test_no_network_is_one_line(tmp_path, monkeypatch, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(IeinError) as err:
        Recognizer.load("me/live")
    message = str(err.value)
    assert "hub model me/live" in message and "\n" not in message, message
    assert "cannot be reached" in message or "failed" in message, message
    assert "Retrying" not in capsys.readouterr().err  # the library's retry chatter is not shown


def test_serve_loads_a_hub_model(hub, tmp_path, monkeypatch):
    import uvicorn
    from fastapi.testclient import TestClient

    folder = export_model(str(_live_checkpoint(tmp_path)), tmp_path / "repo", "me/live")
    hub.publish("me/live", _folder_files(folder))
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.setdefault("app", app))
    assert main(["serve", "--model", "me/live", "--port", "0"]) == 0
    with TestClient(served["app"]) as client:
        body = client.get("/model").json()
        assert body["source"] == "me/live" and body["streams"] is True
        got = client.post("/predict", json={"utterances": [{"speaker": "Ann", "text": "w1 w2"}]}).json()
        assert got["utterances"][0]["label"] in LABELS

"""Hugging Face hub repositories by id (``org/name``, optionally ``org/name@revision``): the
base models of the transformer encoder, and iein models shared as a repository.

Downloads go through ``huggingface_hub`` (its cache, ``HF_HOME``/``HF_HUB_CACHE``, its
``HF_ENDPOINT`` and ``HF_TOKEN``), one revision at a time: the first file resolves the
revision to its commit, every other file is fetched at that commit, so a repository updated
meanwhile cannot mix two versions.  ``HF_HUB_OFFLINE=1`` reads the cache only.  Every failure
is one line naming the id (and the revision or file); a download cut off leaves no partial
file in the cache (``huggingface_hub`` keeps them as ``*.incomplete``, removed here).

What a downloaded file may do is what a local one may: iein reads safetensors and JSON only,
with their checksums (:mod:`iein.checkpoint`, the encoder's weights hash); nothing in a
repository is executed.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import CheckpointError, ConfigError

__all__ = ["HubRef", "parse_hub_id", "download_base_model", "download_iein_model", "IEIN_FILE", "CARD_FILE",
           "README_FILE", "TOKENIZER_FILES"]

#: The files of an iein model repository (``iein export-model`` writes them).
IEIN_FILE = "iein.safetensors"
CARD_FILE = "iein.card.json"
README_FILE = "README.md"
#: ``org/name`` as the hub spells repository ids, then an optional ``@revision``.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<rev>[\w./-]+))?$")
#: Files that define a tokenizer (fetched when present; hashed into a featurizer's identity).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")


class HubRef(tuple):
    """``(repo_id, revision or None)``."""

    @property
    def repo_id(self) -> str:
        return self[0]

    @property
    def revision(self) -> str | None:
        return self[1]


def parse_hub_id(text: str) -> HubRef | None:
    """``org/name[@revision]`` -> a :class:`HubRef`; None for anything else: a name, a path
    with ``..`` or a ``.safetensors`` suffix, and a local path, i.e. one that exists or whose
    folder ``org`` exists here (``runs/model`` is a missing file, not a repository)."""
    m = _HUB_ID.match(text)
    if m is None or ".." in text or text.endswith(".safetensors"):
        return None
    local = Path(m["repo"]).expanduser()
    if local.exists() or local.parent.is_dir():
        return None
    return HubRef((m["repo"], m["rev"]))


def _hub() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.errors  # noqa: F401  (a submodule, not loaded with the package)
    except ImportError:
        raise ConfigError("models from the Hugging Face hub need huggingface_hub: pip install 'iein[hub]'") from None
    return huggingface_hub


def _options() -> dict[str, Any]:
    """The environment read at call time (``huggingface_hub`` reads it once, at import)."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    opts: dict[str, Any] = {"local_files_only": offline}
    if os.environ.get("HF_ENDPOINT"):
        opts["endpoint"] = os.environ["HF_ENDPOINT"].rstrip("/")
    if os.environ.get("HF_HUB_CACHE"):
        opts["cache_dir"] = os.environ["HF_HUB_CACHE"]
    elif os.environ.get("HF_HOME"):
        opts["cache_dir"] = str(Path(os.environ["HF_HOME"]) / "hub")
    return opts


def _message(exc: Exception, repo_id: str, revision: str | None, filename: str, offline: bool) -> str:
    """One line for a failed download."""
    from huggingface_hub import errors

    at = f" at revision {revision!r}" if revision else ""
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"hub model {repo_id}: revision {revision!r} does not exist"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return (f"hub model {repo_id}: no such repository (a typo? a private or gated one needs a token: "
                "HF_TOKEN or `hf auth login`)")
    if isinstance(exc, errors.LocalEntryNotFoundError):
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        return f"hub model {repo_id}{at}: {filename} is not in the local cache and {why}; download it once online"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"hub model {repo_id}{at}: downloading {filename} failed ({type(exc).__name__}: {first})"


def _drop_partials(repo_id: str, cache_dir: str | None) -> None:
    """Remove this repository's ``*.incomplete`` blobs (a download cut off)."""
    from huggingface_hub import constants

    folder = Path(cache_dir or constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "blobs"
    for part in folder.glob("*.incomplete") if folder.is_dir() else ():
        part.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """``huggingface_hub``'s own retry warnings off: a failure becomes iein's one line."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its loggers' levels alone do not silence the retry loop
    try:
        yield
    finally:
        logging.disable(previous)


class _Repo:
    """One repository at one revision: files fetched one by one, all at the commit the
    first one resolved."""

    def __init__(self, repo_id: str, revision: str | None) -> None:
        self.hub = _hub()
        self.repo_id, self.revision, self.commit = repo_id, revision, None
        self.opts = _options()

    def fetch(self, filename: str, required: bool = True) -> Path | None:
        errors = self.hub.errors
        try:
            with _quiet_hub():
                path = Path(self.hub.hf_hub_download(self.repo_id, filename, revision=self.commit or self.revision,
                                                     **self.opts))
        except errors.RemoteEntryNotFoundError:
            if required:
                raise CheckpointError(f"hub model {self.repo_id}: the repository has no {filename}") from None
            return None
        except errors.LocalEntryNotFoundError as exc:
            if not required and self.commit is not None and self.opts["local_files_only"]:
                return None  # an optional file this revision never had
            raise ConfigError(_message(exc, self.repo_id, self.revision, filename, self.opts["local_files_only"])) \
                from None
        except (errors.HfHubHTTPError, OSError, ValueError) as exc:
            _drop_partials(self.repo_id, self.opts.get("cache_dir"))
            raise ConfigError(_message(exc, self.repo_id, self.revision, filename, self.opts["local_files_only"])) \
                from None
        except Exception as exc:  # httpx's transport errors (a cut connection) are not OSError
            _drop_partials(self.repo_id, self.opts.get("cache_dir"))
            raise ConfigError(_message(exc, self.repo_id, self.revision, filename, False)) from None
        if self.commit is None:  # <cache>/models--org--name/snapshots/<commit>/<filename>
            self.commit = path.parent.name
        return path


def download_base_model(repo_id: str, revision: str | None = None) -> tuple[Path, str]:
    """A transformer base model: its snapshot folder (``config.json``, the tokenizer's files,
    the weights: ``model.safetensors``, its shards, or ``pytorch_model.bin``) and the commit."""
    repo = _Repo(repo_id, revision)
    config = repo.fetch("config.json")
    for name in TOKENIZER_FILES:
        repo.fetch(name, required=False)
    if repo.fetch("model.safetensors", required=False) is None:
        index = repo.fetch("model.safetensors.index.json", required=False)
        if index is not None:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
            for shard in shards:
                repo.fetch(shard)
        elif repo.fetch("pytorch_model.bin", required=False) is None:
            raise CheckpointError(f"hub model {repo_id}: no weights (model.safetensors or pytorch_model.bin)")
    assert config is not None and repo.commit is not None
    return config.parent, repo.commit


def download_iein_model(ref: HubRef) -> tuple[Path, str]:
    """An iein model repository: the path of its checkpoint and the commit.  A repository
    without ``iein.safetensors`` is refused as not an iein model."""
    repo = _Repo(ref.repo_id, ref.revision)
    try:
        path = repo.fetch(IEIN_FILE)
    except CheckpointError:
        raise CheckpointError(f"hub model {ref.repo_id}: not an iein model repository (no {IEIN_FILE}; "
                              "`iein export-model` writes one)") from None
    repo.fetch(CARD_FILE, required=False)
    assert path is not None and repo.commit is not None
    return path, repo.commit


def _training(card: dict[str, Any]) -> dict[str, Any]:
    """What a reader needs to retrain: the command (when the card has one) and every config."""
    keys = ("model_type", "encoder_type", "model_config", "encoder_config", "train_config", "best_epoch",
            "data_checksums", "created_with")
    out = {k: card[k] for k in keys if k in card}
    command = (card.get("model_card") or {}).get("command")
    if command:
        out["command"] = command
    return out


def model_card(card: dict[str, Any], repo_hint: str, files: Sequence[str]) -> str:
    """A hub model card (``README.md``: YAML metadata, then Markdown) from an iein model's
    card (:attr:`iein.recognizer.Recognizer.card`)."""
    dataset = card.get("dataset") or "its own corpus"
    arch = f"{card.get('model_type', 'iein')} on {card.get('encoder_type', '?')}"
    rows = []
    for split in ("dev", "test"):
        final = (card.get(split) or {}).get("final") or {}
        if "weighted_f1" in final:
            rows.append(f"| {split} | {final['weighted_f1']:.2f} | {final.get('accuracy', float('nan')):.2f} |")
    labels = ", ".join(map(str, card.get("labels", [])))
    front = ["---", "library_name: iein", "pipeline_tag: text-classification",
             "tags: [emotion-recognition, erc, conversation, iein]"]
    if card.get("dataset"):
        front.append(f"datasets: [{card['dataset']}]")
    front += ["metrics: [f1]", "---", ""]
    body = [f"# {repo_hint}", "",
            f"An emotion-recognition-in-conversation model ({arch}) trained with iein "
            f"{card.get('package_version', '')} on {dataset}. It labels every utterance of a conversation with "
            f"one of: {labels}.", ""]
    if rows:
        body += ["| split | weighted F1 | accuracy |", "|---|---:|---:|", *rows,
                 "", "Dev chose the epoch; test was scored once, at the end.", ""]
    body += ["## Use", "", "```bash", "pip install 'iein[hub]'", f"iein predict --model {repo_hint} dialogues.jsonl",
             "```", "", "```python", "from iein.recognizer import Recognizer", "",
             f'rec = Recognizer.load("{repo_hint}")',
             'rec.predict([("Ross", "We were on a break!"), ("Rachel", "Oh, here we go again.")])', "```", "",
             "Loading reads safetensors and JSON only, checked against their checksums; nothing in this "
             "repository is executed.", "", "## Files", "", *[f"- `{f}`" for f in files], "",
             "## Training", "", "```json", json.dumps(_training(card), indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(front + body)

"""Training with honest model selection: early stopping and the best epoch chosen on dev
weighted-F1 only; the test split is scored once, with the selected weights, at the end.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..checkpoint import save_checkpoint
from ..data.conversation import Conversation, Corpus
from ..evaluation.evaluate import evaluate_model
from ..models.iein import IEIN, IEINConfig, iein_loss
from ..text.embeddings import build_embedding_matrix, coverage, format_coverage, load_vectors
from ..text.tokenizer import tokenize
from ..text.vocab import Vocab
from ..utils import set_seed
from .batching import MAX_WORDS, EncodedConversation, encode_conversations, iter_batches
from .config import TrainConfig

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fingerprint(convs: Sequence[Conversation]) -> str:
    """sha256 of a split's content (ids, speakers, texts, labels), independent of file format,
    so a checkpoint records exactly which data it was trained and scored on."""
    h = hashlib.sha256()
    for c in convs:
        h.update(json.dumps([c.id, [[u.speaker, u.text, u.label] for u in c.utterances]]).encode())
    return h.hexdigest()


@dataclass
class PreparedData:
    """Everything derived from a corpus and word vectors once, reused across seeds."""

    corpus_name: str
    labels: tuple[str, ...]
    vocab: Vocab
    embeddings: np.ndarray
    splits: dict[str, list[EncodedConversation]]
    coverage: dict[str, Any]
    provenance: dict[str, Any]
    data_checksums: dict[str, str]


def prepare(corpus: Corpus, vectors: str | Path | None = None, max_words: int = MAX_WORDS, log: Log = _stderr) -> PreparedData:
    """Tokenise, build the vocabulary from the *training split only* (no dev/test leakage),
    look up pretrained vectors, and encode every split."""
    train_tokens = [tokenize(u.text) for c in corpus["train"] for u in c.utterances]
    vocab = Vocab.build(train_tokens)
    wv = load_vectors(vectors, restrict_to=set(vocab.to_list()))
    matrix, _ = build_embedding_matrix(vocab, wv, seed=0)
    cov = coverage(train_tokens, wv)
    log(f"vectors {wv.provenance.get('name')} ({wv.vectors.shape[1]}d): {format_coverage(cov)}")
    splits = {name: encode_conversations(convs, vocab, corpus.labels, max_words) for name, convs in corpus.splits.items()}
    return PreparedData(
        corpus.name, tuple(corpus.labels), vocab, matrix, splits, cov, dict(wv.provenance),
        {name: fingerprint(convs) for name, convs in corpus.splits.items()},
    )


def class_weights(data: Sequence[EncodedConversation], n_labels: int, mode: str) -> torch.Tensor | None:
    """'balanced' = n / (L * count_c) as in scikit-learn; 'sqrt' its square root (milder).
    Both are normalised to mean 1 so the loss scale (and lambda's meaning) is unchanged."""
    if mode == "none":
        return None
    gold = np.concatenate([c.label_ids for c in data])
    counts = np.bincount(gold[gold >= 0], minlength=n_labels).astype(np.float64)
    w = counts.sum() / (n_labels * np.maximum(counts, 1))
    if mode == "sqrt":
        w = np.sqrt(w)
    return torch.tensor(w / w.mean(), dtype=torch.float32)


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]]
    dev: dict[str, Any]
    test: dict[str, Any] | None
    seconds_per_epoch: float
    checkpoint: str | None
    model: IEIN = field(repr=False)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def _selection_score(scores: dict[str, Any]) -> float:
    return scores["final"].get("micro_f1_excl", scores["final"]["weighted_f1"])


def build_optimizer(model: IEIN, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with the paper's L2 on every weight except the word embeddings, which get
    ``embedding_weight_decay`` (Adam's L2 would pull every row absent from a batch towards
    zero at each step; see docs/results.md)."""
    params = [p for p in model.parameters() if p.requires_grad]
    emb = model.utterance_encoder.embedding.weight
    groups = [{"params": [p for p in params if p is not emb], "weight_decay": cfg.weight_decay}]
    if emb.requires_grad:
        groups.append({"params": [emb], "weight_decay": cfg.embedding_weight_decay})
    return torch.optim.Adam(groups, lr=cfg.lr)


def train(
    data: PreparedData,
    model_config: IEINConfig | dict[str, Any] | None = None,
    cfg: TrainConfig | None = None,
    out: str | Path | None = None,
    progress: bool | None = None,
    log: Log = _stderr,
    evaluate_test: bool = True,
) -> TrainResult:
    """Train one model on ``data['train']``, select on ``data['dev']``, score ``data['test']``.

    The best checkpoint (by dev score of the last step) is written atomically to ``out``
    whenever it improves, so an interrupted run still leaves the best model so far.
    """
    cfg = cfg or TrainConfig()
    overrides = model_config.to_dict() if isinstance(model_config, IEINConfig) else dict(model_config or {})
    overrides.update(n_labels=len(data.labels), vocab_size=len(data.vocab), embedding_dim=data.embeddings.shape[1])
    mcfg = IEINConfig.from_dict(overrides)
    if progress is None:
        progress = sys.stderr.isatty()
    exclude = (cfg.exclude_label,) if cfg.exclude_label else ()

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        set_seed(cfg.seed)
        model = IEIN(mcfg, torch.from_numpy(data.embeddings))
        params = [p for p in model.parameters() if p.requires_grad]
        optim = build_optimizer(model, cfg)
        weight = class_weights(data.splits["train"], mcfg.n_labels, cfg.class_weighting)
        rng = np.random.default_rng(cfg.seed)
        train_set, dev_set = data.splits["train"], data.splits["dev"]
        n_batches = (len(train_set) + cfg.batch_size - 1) // cfg.batch_size

        best_score, best_epoch, best_state = -1.0, 0, None
        history: list[dict[str, Any]] = []
        epoch_seconds: list[float] = []
        meta = _checkpoint_meta(data, mcfg, cfg)
        for epoch in range(1, cfg.max_epochs + 1):
            t0 = time.perf_counter()
            model.train()
            sums = {"loss": 0.0, "ce": 0.0, "adj": 0.0}
            bar = tqdm(iter_batches(train_set, cfg.batch_size, shuffle=True, rng=rng), total=n_batches,
                       desc=f"epoch {epoch}", leave=False, disable=not progress)
            for batch in bar:
                gold = batch.labels if mcfg.variant == "gold_label" else None
                steps = model(batch.tokens, batch.word_lengths, batch.n_utts, gold=gold)
                loss, parts = iein_loss(steps, batch.labels, cfg.lam, weight)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
                optim.step()
                sums["loss"] += float(loss.detach())
                sums["ce"] += parts["ce"]
                sums["adj"] += parts["adj"]
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            train_seconds = time.perf_counter() - t0
            epoch_seconds.append(train_seconds)
            dev = evaluate_model(model, dev_set, data.labels, exclude, cfg.eval_batch_size)
            score = _selection_score(dev)
            row = {k: v / n_batches for k, v in sums.items()}
            row.update(epoch=epoch, dev_step_wf1=[s["weighted_f1"] for s in dev["steps"]], dev_score=score,
                       seconds=round(train_seconds, 2))
            history.append(row)
            improved = score > best_score
            if improved:
                best_score, best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if out is not None:
                    save_checkpoint(out, model, data.vocab, data.labels, **meta, best_epoch=epoch, dev=dev)
            steps_txt = "/".join(f"{x:.2f}" for x in row["dev_step_wf1"])
            log(
                f"epoch {epoch:3d} | loss {row['loss']:.4f} (ce {row['ce']:.4f}, adj {row['adj']:.4f}) | "
                f"dev w-F1 per step {steps_txt} | {train_seconds:.1f}s{' *' if improved else ''}"
            )
            if epoch >= max(cfg.min_epochs, 1) and epoch - best_epoch >= cfg.patience:
                log(f"early stop: no dev improvement for {cfg.patience} epochs (best epoch {best_epoch})")
                break

        assert best_state is not None
        model.load_state_dict(best_state)
        model.eval()
        dev = evaluate_model(model, dev_set, data.labels, exclude, cfg.eval_batch_size)
        test = None
        if evaluate_test and data.splits.get("test"):
            test = evaluate_model(model, data.splits["test"], data.labels, exclude, cfg.eval_batch_size)
        if out is not None:
            save_checkpoint(out, model, data.vocab, data.labels, **meta, best_epoch=best_epoch, dev=dev, test=test)
        return TrainResult(best_epoch, len(history), history, dev, test, float(np.mean(epoch_seconds)),
                           str(out) if out is not None else None, model)
    finally:
        torch.set_num_threads(prev_threads)


def _checkpoint_meta(data: PreparedData, mcfg: IEINConfig, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "dataset": data.corpus_name,
        "train_config": cfg.to_dict(),
        "embeddings": data.provenance,
        "coverage": data.coverage,
        "data_checksums": data.data_checksums,
        "created_with": f"iein {__version__}, torch {torch.__version__}",
    }


__all__ = ["PreparedData", "TrainResult", "prepare", "train", "class_weights", "fingerprint"]

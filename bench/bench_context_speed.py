"""Training speed of our context models against their authors' public code, on MELD shapes
(a benchmark, not a test).

Each model is one entry of :data:`ENTRIES`: how to build our side and the authors' side,
where the authors' file lives under ``--authors-dir`` (a checkout of
declare-lab/conv-emotion, kept OUTSIDE this repository: their code is not ours to ship),
the utterance feature size and the batch size of the authors' MELD script.  Both sides see
the same input: the 1038 MELD training dialogues with their real lengths, speaker patterns
and labels, random utterance features of the authors' size, in the same shuffled batches.

One timed unit is a training step (forward, backward, Adam step) over one batch; the input
tensors of every batch are built before the clock starts.  By default all batches of the
epoch are timed after one untimed warm-up batch (``--batches K`` times the first K batches
and extrapolates to the epoch).  At every thread count the two sides run one after the
other in this process; ``--repeats R`` alternates them R times and keeps each side's fastest
epoch (the least disturbed by other processes).  With ``--interleave`` each repeat instead
runs both epochs at once, batch by batch in proportion (:func:`interleaved_epochs`), so
both sides meet the same load; seconds and speed-ups are then medians over the repeats.

    python bench/bench_context_speed.py --authors-dir /tmp/conv-emotion --threads 1 2

Prints a Markdown table (seconds per epoch, ours / theirs) and with ``--out`` writes JSON.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iein import layers
from iein.data.batching import IGNORE, Batch, label_ids, speaker_ids
from iein.data.conversation import label_index
from iein.data.registry import load_corpus
from iein.encoders.base import EncoderConfig, UtteranceEncoder


# -- the input, model-neutral


@dataclass
class RawBatch:
    """One batch of dialogues, right-padded: what every side converts to its own input."""

    features: Tensor  # (B, N, D) utterance features, zero at padding
    n_utts: Tensor  # (B,)
    speakers: Tensor  # (B, N) party index within the dialogue (first appearance order), -1 at padding
    labels: Tensor  # (B, N) label ids, IGNORE at padding

    @property
    def mask(self) -> Tensor:
        return self.speakers >= 0


def meld_batches(data_dir: str | None, feature_dim: int, batch_size: int, seed: int) -> list[RawBatch]:
    """The MELD training split as the authors' loader serves it: shuffled dialogues in
    batches of ``batch_size``; features are random (same for every side), the rest is real."""
    corpus = load_corpus("meld", data_dir)
    index = label_index(corpus.labels)
    convs = corpus["train"]
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    order = rng.permutation(len(convs))
    batches = []
    for start in range(0, len(order), batch_size):
        group = [convs[i] for i in order[start:start + batch_size]]
        n_utts = torch.tensor([len(c) for c in group])
        width = int(n_utts.max())
        speakers = torch.full((len(group), width), -1)
        labels = torch.full((len(group), width), IGNORE)
        features = torch.zeros(len(group), width, feature_dim)
        for i, conv in enumerate(group):
            n = len(conv)
            speakers[i, :n] = torch.from_numpy(speaker_ids(conv))
            labels[i, :n] = torch.from_numpy(label_ids(conv, index))
            features[i, :n] = torch.randn(n, feature_dim, generator=gen)
        batches.append(RawBatch(features, n_utts, speakers, labels))
    return batches


# -- one side of a comparison


@dataclass
class Side:
    """A model under test: ``prepare`` turns a batch into its input (not timed), ``step``
    runs forward + backward + optimiser step on it."""

    model: nn.Module
    prepare: Callable[[RawBatch], Any]
    step: Callable[[Any], None]
    notes: list[str] = field(default_factory=list)
    #: An epoch of this side's own inputs (a whole model on real text), else the shared batches.
    own_inputs: list[Any] | None = None


class FeatureInput(UtteranceEncoder):
    """A stand-in utterance encoder: our context models read ready vectors ``u (B, N, d)``
    through ``ConversationModel.context``, so the encoder is never run; it only states d."""

    encoder_type = "features"
    config_class = EncoderConfig

    def __init__(self, dim: int) -> None:
        super().__init__(EncoderConfig(), featurizer=None)  # type: ignore[arg-type]
        self.dim = dim

    @property
    def output_dim(self) -> int:
        return self.dim


def ours_side(model: nn.Module, lr: float, weight_decay: float) -> Side:
    """Any :class:`iein.models.base.ConversationModel`: ``context`` + its own ``loss``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()

    def prepare(raw: RawBatch) -> tuple[Tensor, Batch]:
        return raw.features, Batch(None, raw.n_utts, raw.speakers, raw.labels, list(range(len(raw.n_utts))))

    def step(inputs: tuple[Tensor, Batch]) -> None:
        u, batch = inputs
        opt.zero_grad()
        loss, _ = model.loss(model.context(u, batch), batch)
        loss.backward()
        opt.step()

    return Side(model, prepare, step)


def load_module(path: Path, name: str) -> ModuleType:
    """Import one of the authors' files by path, under a unique module name (several of
    their folders have a ``model.py``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # their files import siblings by bare name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


# -- DialogueRNN


MELD_PARTIES = 9  # size of the speaker one-hot vectors in the authors' MELD features


def dialoguernn_ours(args: argparse.Namespace, entry: "Entry") -> Side:
    from iein.models.dialoguernn import DialogueRNN, DialogueRNNConfig

    # train_MELD.py: D_g = D_p = 150, D_e = D_h = 100, attention 'general', dropout 0.1,
    # rec_dropout 0.1 (the code's emotion dropout is dropout + 0.15)
    cfg = DialogueRNNConfig(n_labels=7, global_dim=150, party_dim=150, emotion_dim=100, hidden_dim=100,
                            dropout=0.1, rec_dropout=0.1, emotion_dropout=0.25)
    return ours_side(DialogueRNN(cfg, FeatureInput(entry.feature_dim)), entry.lr, entry.weight_decay)


def dialoguernn_authors(args: argparse.Namespace, entry: "Entry", module: ModuleType) -> Side:
    """``BiModel`` trained as ``train_or_eval_model`` of their ``train_MELD.py`` does (without
    its metric bookkeeping): time-major input, one-hot speaker masks, MaskedNLLLoss."""
    model = module.BiModel(entry.feature_dim, 150, 150, 100, 100, n_classes=7, listener_state=False,
                           context_attention="general", dropout_rec=0.1, dropout=0.1)
    loss_function = module.MaskedNLLLoss()
    opt = torch.optim.Adam(model.parameters(), lr=entry.lr, weight_decay=entry.weight_decay)
    model.train()

    def prepare(raw: RawBatch) -> tuple[Tensor, ...]:
        mask = raw.mask
        qmask = F.one_hot(raw.speakers.clamp(min=0), MELD_PARTIES).float() * mask[..., None]
        return (raw.features.transpose(0, 1).contiguous(), qmask.transpose(0, 1).contiguous(),
                mask.float(), raw.labels.clamp(min=0))  # their padded labels are 0, masked out

    def step(inputs: tuple[Tensor, ...]) -> None:
        textf, qmask, umask, label = inputs
        opt.zero_grad()
        log_prob, _, _, _ = model(textf, qmask, umask)
        lp_ = log_prob.transpose(0, 1).contiguous().view(-1, log_prob.size()[2])
        loss = loss_function(lp_, label.view(-1), umask)
        loss.backward()
        opt.step()

    return Side(model, prepare, step, [f"speaker one-hots of {MELD_PARTIES} parties, as in their MELD features"])


def dialoguernn_check(args: argparse.Namespace, entry: "Entry", module: ModuleType, raw: RawBatch) -> float:
    """Same function: load the authors' weights into our model; the largest difference of
    the eval-mode log-probabilities at real utterances of one batch (float rounding only)."""
    ours, theirs = dialoguernn_ours(args, entry), dialoguernn_authors(args, entry, module)
    model, auth = ours.model.eval(), theirs.model.eval()
    with torch.no_grad():
        for mine, cell in ((model.forward_rnn, auth.dialog_rnn_f.dialogue_cell),
                           (model.backward_rnn, auth.dialog_rnn_r.dialogue_cell)):
            for name in ("g_cell", "p_cell", "e_cell"):
                getattr(mine, name).load_state_dict(getattr(cell, name).state_dict())
            mine.context_query.weight.copy_(cell.attention.transform.weight)
        model.emotion_attention.transform.load_state_dict(auth.matchatt.transform.state_dict())
        model.hidden.load_state_dict(auth.linear.state_dict())
        model.classifier.load_state_dict(auth.smax_fc.state_dict())
        u, batch = ours.prepare(raw)
        mine_lp = F.log_softmax(model.context(u, batch)[0], dim=-1)
        textf, qmask, umask, _ = theirs.prepare(raw)
        their_lp = auth(textf, qmask, umask)[0].transpose(0, 1)
    return float((mine_lp - their_lp)[raw.mask].abs().max())


# -- DialogueGCN


MELD_LONGEST_DIALOGUE = 33  # test split; their edge attention needs the maximum length in advance


def dialoguegcn_ours(args: argparse.Namespace, entry: "Entry") -> Side:
    from iein.models.dialoguegcn import DialogueGCN, DialogueGCNConfig

    # DialogueGCN/train_IEMOCAP.py (their only DialogueGCN script): D_e = graph_h = 100,
    # window 10/10, dropout 0.5, nodal attention (eq. 5-6); GraphNetwork: 30 bases
    cfg = DialogueGCNConfig(n_labels=7, hidden=100, graph_hidden=100, classifier_hidden=100, window_past=10,
                            window_future=10, max_parties=MELD_PARTIES, num_bases=30, dropout=0.5,
                            nodal_attention=True)
    return ours_side(DialogueGCN(cfg, FeatureInput(entry.feature_dim)), entry.lr, entry.weight_decay)


def dialoguegcn_authors(args: argparse.Namespace, entry: "Entry", module: ModuleType) -> Side:
    """``DialogueGCNModel`` trained as ``train_or_eval_graph_model`` of their
    ``train_IEMOCAP.py`` does (without its bookkeeping): base model 'GRU' (the paper's
    bidirectional GRU; theirs has 2 layers), nodal attention on, ``nn.NLLLoss`` over the
    real utterances.  D_g, D_p, D_h, D_a are unused by the 'GRU' base model."""
    sys.modules.setdefault(module.__name__, module)  # PyG's MessagePassing inspects its module
    model = module.DialogueGCNModel("GRU", entry.feature_dim, 150, 150, 100, 100, 100, 100,
                                    n_speakers=MELD_PARTIES, max_seq_len=MELD_LONGEST_DIALOGUE,
                                    window_past=10, window_future=10, n_classes=7, dropout=0.5,
                                    nodal_attention=True, no_cuda=True)
    loss_function = nn.NLLLoss()
    opt = torch.optim.Adam(model.parameters(), lr=entry.lr, weight_decay=entry.weight_decay)
    model.train()

    def prepare(raw: RawBatch) -> tuple[Any, ...]:
        mask = raw.mask
        qmask = F.one_hot(raw.speakers.clamp(min=0), MELD_PARTIES).float() * mask[..., None]
        return (raw.features.transpose(0, 1).contiguous(), qmask.transpose(0, 1).contiguous(), mask.float(),
                raw.n_utts.tolist(), raw.labels[mask])  # their `lengths` list and flat labels

    def step(inputs: tuple[Any, ...]) -> None:
        textf, qmask, umask, lengths, label = inputs
        opt.zero_grad()
        log_prob, _, _, _, _ = model(textf, qmask, umask, lengths)
        loss = loss_function(log_prob, label)
        loss.backward()
        opt.step()

    return Side(model, prepare, step, [f"speaker one-hots of {MELD_PARTIES} parties, base model 'GRU', "
                                       f"max_seq_len {MELD_LONGEST_DIALOGUE}"])


# -- IEIN, whole model (issue 12 part 4): words -> BiGRU -> attention -> EC-Encoder, on real text


def iein_ours(args: argparse.Namespace, entry: "Entry") -> Side:
    """Our IEIN exactly as ``iein train --dataset meld`` trains it: the ``meld`` preset (GloVe
    6B 50d, word-level BiGRU + attention, T = 2, batch 8 dialogues), real MELD text, the
    trainer's step (class weights, loss over every step, gradient clipping, Adam).  Its input
    is its own: batches of token ids (:attr:`Side.own_inputs`), not the random features."""
    from iein.data.batching import iter_batches
    from iein.training.experiment import parse_overrides, resolve_experiment
    from iein.training.trainer import build_for, build_optimizer, class_weights, prepare

    exp = resolve_experiment("meld", overrides=parse_overrides(args.iein_set), threads=torch.get_num_threads())
    data = prepare(load_corpus("meld", args.data_dir), encoder=exp.encoder, encoder_config=exp.encoder_config,
                   log=lambda _msg: None)
    model = build_for(data, exp).train()
    opt = build_optimizer(model, exp.train)
    cfg = exp.train
    weight = class_weights(data.splits["train"], len(data.labels), cfg.class_weighting)
    batches = list(iter_batches(data.splits["train"], cfg.batch_size, model.utterance_encoder.collate, shuffle=True,
                                rng=np.random.default_rng(args.seed)))

    def step(batch: Batch) -> None:
        opt.zero_grad()
        model(batch, class_weight=weight).loss.backward()
        if cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()

    return Side(model, lambda raw: raw, step, [f"preset meld: batch {cfg.batch_size} dialogues, real MELD text"],
                own_inputs=batches)


# -- the table of models


@dataclass
class Entry:
    ours: Callable[[argparse.Namespace, "Entry"], Side]
    authors: Callable[[argparse.Namespace, "Entry", ModuleType], Side]
    authors_file: str  # path of the authors' model file inside --authors-dir
    feature_dim: int  # utterance feature size of the authors' MELD script
    batch_size: int  # batch size (dialogues) of the authors' MELD script
    lr: float
    weight_decay: float
    #: Optional: max |difference| of the two sides' outputs with the same weights (eval mode).
    check: Callable[[argparse.Namespace, "Entry", ModuleType, RawBatch], float] | None = None


ENTRIES: dict[str, Entry] = {
    # declare-lab/conv-emotion DialogueRNN/train_MELD.py: text features D_m = 600,
    # batch_size 30, Adam lr 0.0005, l2 0.00001
    "dialoguernn": Entry(dialoguernn_ours, dialoguernn_authors, "DialogueRNN/model.py",
                         feature_dim=600, batch_size=30, lr=5e-4, weight_decay=1e-5, check=dialoguernn_check),
    # No DialogueGCN MELD script was released (conv-emotion issue #26: "the hyperparams are
    # also different for MELD"); the maintainers say DialogueGCN and DialogueRNN use the same
    # features, so D_m = 600 and batch 30 come from DialogueRNN/train_MELD.py, and lr 0.0001,
    # l2 0.00001 from DialogueGCN/train_IEMOCAP.py
    "dialoguegcn": Entry(dialoguegcn_ours, dialoguegcn_authors, "DialogueGCN/model.py",
                         feature_dim=600, batch_size=30, lr=1e-4, weight_decay=1e-5),
    # issue 12 part 4: a whole IEIN training epoch (word-level encoder included) against the
    # authors' DialogueRNN epoch on its ready-made 600-d features (train_MELD.py settings)
    "iein-vs-dialoguernn": Entry(iein_ours, dialoguernn_authors, "DialogueRNN/model.py",
                                 feature_dim=600, batch_size=30, lr=5e-4, weight_decay=1e-5),
}


# -- timing


def interleaved_epochs(sides: dict[str, tuple[Side, list[Any]]], batches: int) -> dict[str, tuple[float, float]]:
    """One epoch of every side with their batches interleaved: each next timed batch goes to
    the side furthest behind in its own epoch, so that all sides meet the same fast and slow
    phases of a shared machine (alternating whole epochs lets a phase of tens of seconds
    favour either side); with one side, simply its epoch.  Wall-clock and process CPU seconds
    per side (extrapolated from the first ``batches`` of each side's epoch when ``batches`` >
    0).  CPU time is the steadier of the two on a shared machine; with several threads it
    adds up the time of all of them."""
    for side, inputs in sides.values():
        side.step(inputs[0])  # warm-up: allocator and first-call costs, not timed
    todo = {k: min(batches or len(inputs), len(inputs)) for k, (_, inputs) in sides.items()}
    done = dict.fromkeys(sides, 0)
    wall, cpu = dict.fromkeys(sides, 0.0), dict.fromkeys(sides, 0.0)
    while any(done[k] < todo[k] for k in sides):
        k = min((k for k in sides if done[k] < todo[k]), key=lambda k: done[k] / todo[k])
        side, inputs = sides[k]
        w, c = time.perf_counter(), time.process_time()
        side.step(inputs[done[k]])
        wall[k] += time.perf_counter() - w
        cpu[k] += time.process_time() - c
        done[k] += 1
    return {k: (wall[k] * len(sides[k][1]) / todo[k], cpu[k] * len(sides[k][1]) / todo[k]) for k in sides}


def bench_entry(name: str, entry: Entry, args: argparse.Namespace, log: Callable[[str], None]) -> list[dict]:
    raw = meld_batches(args.data_dir, entry.feature_dim, entry.batch_size, args.seed)
    measured = min(args.batches or len(raw), len(raw))
    module = None
    path = Path(args.authors_dir) / entry.authors_file if args.authors_dir else None
    if path is None or not path.is_file():
        log(f"{name}: the authors' code was not found at {path}: timing our side only "
            f"(put declare-lab/conv-emotion's {entry.authors_file} under --authors-dir)")
    else:
        module = load_module(path, f"authors_{name}")
    check = None
    if module is not None and entry.check is not None:
        torch.manual_seed(args.seed)
        check = entry.check(args, entry, module, raw[0])
        log(f"{name}: same weights, eval mode: max |ours - authors| = {check:.2e}")
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        builders = {"ours": lambda: entry.ours(args, entry)}
        if module is not None:
            builders["authors"] = lambda: entry.authors(args, entry, module)
        sides = {}
        for label, build in builders.items():
            torch.manual_seed(args.seed)
            side = build()
            sides[label] = (side, side.own_inputs if side.own_inputs is not None else [side.prepare(b) for b in raw])
        best: dict[str, float] = {}
        best_cpu: dict[str, float] = {}
        ratios: list[float] = []
        cpu_ratios: list[float] = []
        if args.interleave and len(sides) > 1:  # both epochs at once; medians over the repeats
            per_rep: dict[str, list[tuple[float, float]]] = {label: [] for label in sides}
            for rep in range(args.repeats):
                times = interleaved_epochs(sides, args.batches)
                for label, t in times.items():
                    per_rep[label].append(t)
                ratios.append(times["authors"][0] / times["ours"][0])
                cpu_ratios.append(times["authors"][1] / times["ours"][1])
                log(f"{name} threads={threads} repeat={rep} interleaved: authors {times['authors'][0]:.2f} s/epoch, "
                    f"ours {times['ours'][0]:.2f} s/epoch: {ratios[-1]:.2f}x")
            for label, ts in per_rep.items():
                best[label] = float(np.median([w for w, _ in ts]))
                best_cpu[label] = float(np.median([c for _, c in ts]))
        else:  # whole epochs alternated; the fastest of each side
            for rep in range(args.repeats):
                for label in ("authors", "ours"):  # theirs first, then ours
                    if label in sides:
                        secs, cpu = interleaved_epochs({label: sides[label]}, args.batches)[label]
                        best[label] = min(best.get(label, float("inf")), secs)
                        best_cpu[label] = min(best_cpu.get(label, float("inf")), cpu)
                        log(f"{name} threads={threads} repeat={rep} {label}: {secs:.2f} s/epoch ({cpu:.2f} CPU s)")
        row = {"model": name, "threads": threads, "batches": len(raw), "ours_batches": len(sides["ours"][1]), "measured_batches": measured,
               "batch_size": entry.batch_size, "feature_dim": entry.feature_dim, "max_abs_diff": check,
               "ours_s_per_epoch": best["ours"], "authors_s_per_epoch": best.get("authors"),
               "speedup": (float(np.median(ratios)) if ratios else
                           best["authors"] / best["ours"] if "authors" in best else None),
               "interleaved_ratios": ratios or None,
               "ours_cpu_s_per_epoch": best_cpu["ours"], "authors_cpu_s_per_epoch": best_cpu.get("authors"),
               "cpu_speedup": (float(np.median(cpu_ratios)) if cpu_ratios else
                               best_cpu["authors"] / best_cpu["ours"] if "authors" in best_cpu else None),
               "ours_params": sum(p.numel() for p in sides["ours"][0].model.parameters()),
               "authors_params": (sum(p.numel() for p in sides["authors"][0].model.parameters())
                                  if "authors" in sides else None)}
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    def num(x: float | None, fmt: str) -> str:
        return format(x, fmt) if x is not None else "n/a"

    lines = ["| model | threads | ours s/epoch | authors s/epoch | speed-up | ours CPU s | authors CPU s | CPU speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['threads']} | {r['ours_s_per_epoch']:.2f} | {num(r['authors_s_per_epoch'], '.2f')} "
                     f"| {num(r['speedup'], '.2f')}x | {r['ours_cpu_s_per_epoch']:.2f} "
                     f"| {num(r['authors_cpu_s_per_epoch'], '.2f')} | {num(r['cpu_speedup'], '.2f')}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(ENTRIES), choices=list(ENTRIES))
    p.add_argument("--authors-dir", default=None,
                   help="a checkout of declare-lab/conv-emotion outside this repository")
    p.add_argument("--data-dir", default=None, help="MELD folder (default: the usual data-dir lookup)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=int, default=0, help="time only the first K batches (0: the whole epoch)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--interleave", action="store_true",
                   help="interleave the two sides batch by batch within each repeat (the same load for "
                        "both on a shared machine); the speed-up is the median of the repeats' ratios")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--iein-set", action="append", default=[], metavar="KEY=VALUE",
                   help="iein-vs-dialoguernn: override a setting of the meld preset, e.g. train.batch_size=32")
    p.add_argument("--gru-path", choices=["scan", "groups"], default="scan",
                   help="how our GRUs train on CPU: the packed scan with its hand-written backward (the "
                        "default) or nn.GRU over length groups (before it); iein.layers.BiRNN.gru_scan")
    args = p.parse_args(argv)
    layers.BiRNN.gru_scan = args.gru_path == "scan"  # every model this benchmark builds

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows = []
    for name in args.models:
        rows += bench_entry(name, ENTRIES[name], args, log)
    print(markdown(rows))
    if args.out:
        meta = {"command": " ".join(sys.argv), "gru_path": args.gru_path, "torch": torch.__version__, "python": platform.python_version(),
                "machine": platform.processor() or platform.machine()}
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

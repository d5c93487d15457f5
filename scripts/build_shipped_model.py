"""Train the shipped default model with the project's own `iein train`, and write its card.

    python scripts/build_shipped_model.py --data-dir ../shared/data/meld [--seed 0]

Writes ``src/iein/pretrained/meld.safetensors`` and ``meld.card.json``.  The card's numbers
are read from the checkpoint that training wrote (dev-selected, test scored once).
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
from iein.checkpoint import read_metadata
from iein.cli import main as iein_main
from iein.models.registry import get_model_class
from iein.utils import atomic_path, atomic_write_json

DEST = Path(__file__).resolve().parents[1] / "src" / "iein" / "pretrained"


def make_card(meta: dict[str, Any], argv: list[str], seed: int) -> dict[str, Any]:
    """The model card of a checkpoint's metadata (:func:`iein.checkpoint.read_metadata`)
    trained by ``iein <argv>``; every number is read from the checkpoint."""
    arch, encoder = meta["model_type"], meta["encoder_type"]
    return {
        "name": "meld",
        "model": f"{get_model_class(arch).reference}; {arch} on {encoder}, iein preset '{meta.get('preset', 'meld')}'",
        "package_version": __version__,
        "command": "iein " + " ".join(shlex.quote(a) for a in argv[:-2]) + " --out meld.safetensors",
        "data": {"dataset": "MELD (Friends transcripts, text only), official train/dev/test CSVs",
                 "content_sha256": meta["data_checksums"]},
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
        "selection": "best epoch by dev weighted F1; test scored once with the selected weights",
        "limits": [
            "English TV-sitcom dialogue (Friends); other domains will score lower",
            "7 MELD labels only: " + ", ".join(meta["labels"]),
            "text only; GloVe 6B 50d vocabulary from MELD train (unknown words map to <unk>)",
            "minority classes (fear, disgust) are rarely predicted",
            f"utterances are truncated to {meta['featurizer'].get('max_words', 128)} tokens",
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data/meld")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "meld.safetensors"
        argv = ["train", "--dataset", "meld", "--data-dir", args.data_dir, "--seed", str(args.seed),
                "--threads", str(args.threads), "--out", str(ckpt)]
        if iein_main(argv) != 0:
            sys.exit("training failed")
        meta = read_metadata(ckpt)
        card = make_card(meta, argv, args.seed)
        DEST.mkdir(parents=True, exist_ok=True)
        with atomic_path(DEST / "meld.safetensors") as tmp_dest:  # never a half-copied shipped model
            shutil.copyfile(ckpt, tmp_dest)
        atomic_write_json(DEST / "meld.card.json", card)
        print(f"wrote {DEST / 'meld.safetensors'} ({(DEST / 'meld.safetensors').stat().st_size / 1e6:.1f} MB) "
              f"test w-F1 {card['test_weighted_f1']:.2f}")


if __name__ == "__main__":
    main()

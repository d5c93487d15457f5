"""int8 dynamic quantisation of the MiniLM encoder against fp32 (a benchmark, not a test).

    python bench/bench_quantize.py --threads 1 --utterances 512 --repeats 3

Encodes MELD dev utterances with all-MiniLM-L6-v2 (mean pooling, as the frozen encoder does) in
fp32 and with ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (per-tensor and
per-channel weights), interleaved, length-sorted batches of 64; prints utterances/s per repeat
and how far the int8 vectors are from the fp32 ones (cosine).  Dev w-F1 of a model on them is the
adoption test (issue 22: within 0.3 points); this script only tells whether that is worth running.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--utterances", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-root", default="../shared/data")
    args = ap.parse_args()
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    from iein.data.registry import load_corpus
    from iein.encoders.base_models import resolve_model

    torch.set_num_threads(args.threads)
    path, _ = resolve_model("minilm")
    tok = AutoTokenizer.from_pretrained(str(path))
    fp32 = AutoModel.from_pretrained(str(path)).eval()
    models = {"fp32": fp32,
              "int8 per-tensor": quantize_dynamic(AutoModel.from_pretrained(str(path)).eval(), {torch.nn.Linear},
                                                  dtype=torch.qint8),
              "int8 per-channel": quantize_dynamic(AutoModel.from_pretrained(str(path)).eval(),
                                                   {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)}
    corpus = load_corpus("meld", f"{args.data_root}/meld")
    texts = [u.text for d in corpus["dev"] for u in d.utterances][: args.utterances]
    order = np.argsort([len(t) for t in texts])

    def encode(model: torch.nn.Module) -> torch.Tensor:
        out = []
        for s in range(0, len(texts), 64):
            x = tok([texts[i] for i in order[s:s + 64]], padding=True, truncation=True, max_length=128,
                    return_tensors="pt")
            with torch.inference_mode():
                h = model(**x).last_hidden_state
            mask = x["attention_mask"].unsqueeze(-1).float()
            out.append((h * mask).sum(1) / mask.sum(1))
        return torch.cat(out)

    ref = encode(fp32)
    for rep in range(args.repeats):
        for name, model in models.items():
            t0 = time.perf_counter()
            encode(model)
            print(f"repeat {rep} {name:17s} {len(texts) / (time.perf_counter() - t0):7.1f} utterances/s", flush=True)
    for name, model in models.items():
        if name != "fp32":
            cos = torch.nn.functional.cosine_similarity(ref, encode(model))
            print(f"{name}: cosine to fp32 min {cos.min():.3f}, mean {cos.mean():.3f}")


if __name__ == "__main__":
    main()

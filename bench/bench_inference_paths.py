"""CPU inference paths for the MiniLM encoder, side by side (a benchmark, not a test).

    python bench/bench_inference_paths.py --threads 1 2 --utterances 512 --repeats 3

Encodes MELD dev utterances with all-MiniLM-L6-v2 (mean pooling, length-sorted batches of 64,
as the frozen featurizer does) through: eager PyTorch fp32 (today's path), ``torch.compile``
(dynamic shapes), ONNX Runtime fp32 (the model exported once with ``torch.onnx.export``) and
ONNX Runtime int8 (``onnxruntime.quantization.quantize_dynamic`` of that export, per-tensor
and per-channel weights).  Every path
runs on the same batches, interleaved within each repeat, at each thread count; it prints
utterances/s per repeat and how far each path's vectors are from eager fp32 (cosine, max abs).
Adoption (issue 22) needs the speed and dev w-F1 within 0.3 points; a path whose vectors are
not within rounding of fp32 would need that dev check, one that is needs none.
Needs ``pip install onnxruntime onnx`` (not an iein dependency unless a path is adopted).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

Batch = tuple[np.ndarray, np.ndarray]  # input ids, attention mask


def batches(texts: list[str], tokenizer, size: int = 64) -> list[Batch]:
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = []
    for s in range(0, len(order), size):
        x = tokenizer([texts[i] for i in order[s:s + size]], padding=True, truncation=True, max_length=128,
                      return_tensors="np")
        out.append((x["input_ids"].astype(np.int64), x["attention_mask"].astype(np.int64)))
    return out


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    return (hidden * m).sum(1) / np.maximum(m.sum(1), 1.0)


class Hidden(torch.nn.Module):
    """The base model as ``(ids, mask) -> last hidden state``: the one graph every path runs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state


def torch_path(module: torch.nn.Module) -> Callable[[Batch], np.ndarray]:
    def run(b: Batch) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(b[0]), torch.from_numpy(b[1])).numpy()
    return run


def ort_path(model_file: Path, threads: int) -> Callable[[Batch], np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
    return lambda b: session.run(None, {"ids": b[0], "mask": b[1]})[0]


def export(module: torch.nn.Module, example: Batch, folder: Path) -> tuple[Path, Path, Path]:
    """fp32 and dynamically quantised int8 (per-tensor, per-channel) ONNX files of ``module``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32, int8, int8_pc = folder / "minilm.onnx", folder / "minilm-int8.onnx", folder / "minilm-int8-pc.onnx"
    axes = {"ids": {0: "n", 1: "L"}, "mask": {0: "n", 1: "L"}, "hidden": {0: "n", 1: "L"}}
    torch.onnx.export(module, (torch.from_numpy(example[0]), torch.from_numpy(example[1])), str(fp32),
                      input_names=["ids", "mask"], output_names=["hidden"], dynamic_axes=axes, opset_version=17,
                      dynamo=False)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    quantize_dynamic(str(fp32), str(int8_pc), weight_type=QuantType.QInt8, per_channel=True)
    return fp32, int8, int8_pc


def encode(run: Callable[[Batch], np.ndarray], data: list[Batch]) -> np.ndarray:
    return np.concatenate([mean_pool(run(b), b[1]) for b in data])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--utterances", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--out", type=Path, default=Path("bench/results/inference_paths.json"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from transformers import AutoModel, AutoTokenizer

    from iein.data.registry import load_corpus
    from iein.encoders.base_models import resolve_model

    path, _ = resolve_model("minilm")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    texts = [u.text for d in load_corpus("meld", f"{args.data_root}/meld")["dev"] for u in d.utterances]
    data = batches(texts[: args.utterances], tokenizer)
    fresh = lambda: Hidden(AutoModel.from_pretrained(str(path)).eval())  # noqa: E731 - one model per path
    tmp = Path(tempfile.mkdtemp(prefix="iein-onnx-"))
    onnx_fp32, onnx_int8, onnx_int8_pc = export(fresh(), data[0], tmp)
    eager = fresh()
    results: dict = {"utterances": len(texts[: args.utterances]), "batches": len(data), "runs": {}, "distance": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        paths = {"eager fp32": torch_path(eager), "torch.compile": torch_path(torch.compile(fresh(), dynamic=True)),
                 "onnxruntime fp32": ort_path(onnx_fp32, threads), "onnxruntime int8": ort_path(onnx_int8, threads),
                 "onnxruntime int8 per-channel": ort_path(onnx_int8_pc, threads)}
        ref = encode(paths["eager fp32"], data)
        for name, run in paths.items():
            vec = encode(run, data)  # also the warm-up (compile, session set-up)
            cos = (vec * ref).sum(1) / (np.linalg.norm(vec, axis=1) * np.linalg.norm(ref, axis=1))
            results["distance"][name] = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                                         "max_abs": float(np.abs(vec - ref).max())}
        for rep in range(args.repeats):
            for name, run in paths.items():
                t0 = time.perf_counter()
                encode(run, data)
                rate = results["utterances"] / (time.perf_counter() - t0)
                results["runs"].setdefault(f"{threads}t {name}", []).append(rate)
                print(f"threads {threads} repeat {rep} {name:28s} {rate:7.1f} utterances/s", flush=True)
    for name, d in results["distance"].items():
        print(f"{name:28s} cosine to eager min {d['cosine_min']:.6f} mean {d['cosine_mean']:.6f} "
              f"max abs {d['max_abs']:.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

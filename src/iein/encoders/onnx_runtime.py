"""A transformer's forward pass through ONNX Runtime: the CPU inference path of transformer encoders.

On this CPU, ONNX Runtime computes MiniLM's hidden states faster than eager PyTorch with the
same floats (within the rounding of a float32 sum; ``bench/bench_inference_paths.py``,
``docs/results.md``), and once a model is exported, predicting needs neither ``transformers``
nor the PyTorch copy of the weights, which is most of a transformer model's start-up.

Runtimes (:data:`RUNTIMES`): ``torch`` is eager PyTorch, the exact reference and the one
training uses; ``onnxruntime`` runs the exported graph on the CPU; ``onnxruntime-int8`` runs that
graph with its weights dynamically quantised to int8 per output channel (faster, but its hidden
states are not the float32 ones: an opt-in whose cost in weighted F1 is measured in
``docs/results.md``, never a default).  Quantisation does not suit every model (it wrecks some:
see ``docs/results.md``), so the int8 graph is compared with the float32 one on probe inputs
when it is made; below :data:`INT8_MIN_COSINE` it is refused with a one-line error.  ``auto`` is ``onnxruntime`` when ``onnxruntime`` and
``onnx`` (the exporter's) are installed (``iein[onnx]``), else ``torch``.

An export is cached under ``<cache root>/onnx/<key>.onnx`` (its int8 form as ``<key>-int8.onnx``),
``key`` naming the function it computes (the weights' hashes and the number of hidden states
read: see the callers).  Next to each, a ``.json`` sidecar records the file's SHA-256, checked
before every use; a file that fails the check or that ONNX Runtime cannot read is reported
(:class:`CacheWarning`) and made again, never used.  Files and sidecars are written atomically.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..atomic import atomic_path, atomic_write_json
from ..errors import ConfigError
from .cache import CacheWarning, cache_root, memo_sha256

RUNTIMES = ("auto", "torch", "onnxruntime", "onnxruntime-int8")
#: The runtimes that run an ONNX export (the rest is PyTorch).
ONNX_RUNTIMES = ("onnxruntime", "onnxruntime-int8")
ONNX_INSTALL = "pip install 'iein[onnx]'"
#: Bump when what an export computes changes: old exports become unreachable.
FORMAT = "iein-onnx/1"
OPSET = 17
#: The least mean cosine, over the probe's tokens and hidden states, between an int8 graph's
#: states and the float32 ones for the int8 graph to be used.  Models that quantise well sit
#: near 0.99; the ones that break fall far below, so the bar is not a fine line.
INT8_MIN_COSINE = 0.95


def onnx_available() -> bool:
    """Whether both ONNX Runtime and the exporter's ``onnx`` package are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def resolve_runtime(runtime: str, field: str = "runtime") -> str:
    """``auto`` -> the runtime it stands for; an unknown or uninstalled one is a one-line error."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"{field} must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "auto":
        return "onnxruntime" if onnx_available() else "torch"
    if runtime in ONNX_RUNTIMES and not onnx_available():
        raise ConfigError(f"{field} {runtime!r} needs onnxruntime and onnx: {ONNX_INSTALL}")
    return runtime


def runtime_for_device(runtime: str, device: str) -> str:
    """A loader's runtime on ``device``: ``auto`` means PyTorch off the CPU (ONNX Runtime is
    used on the CPU only)."""
    return "torch" if runtime == "auto" and str(device) != "cpu" else runtime


def export_key(**identity: Any) -> str:
    """The cache key of an export: sha256 of what decides the function (sorted JSON)."""
    return hashlib.sha256(json.dumps({"format": FORMAT, **identity}, sort_keys=True).encode()).hexdigest()


class OnnxForward:
    """``(input_ids, attention_mask) -> Tensor`` through an ONNX Runtime session on the CPU,
    with as many threads as PyTorch has (``--threads`` sets both)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: its warnings are about graph fusions
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, ids: Tensor, mask: Tensor) -> Tensor:
        feeds = {"ids": ids.cpu().numpy().astype(np.int64, copy=False),
                 "mask": mask.cpu().numpy().astype(np.int64, copy=False)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def _export(module: nn.Module, path: Path) -> None:
    """Trace ``module(ids, mask)`` into ``path`` with batch and length dynamic.  The example
    pads its second row, so the traced graph keeps the attention mask's arithmetic (a mask of
    ones only can be folded away by the model's own shortcut)."""
    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, 0, 0, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    axes = {"ids": {0: "n", 1: "L"}, "mask": {0: "n", 1: "L"}, "out": {0: "n", 1: "L"}}
    module = module.eval()
    with warnings.catch_warnings():  # the tracer's notes on Python-side shape arithmetic
        warnings.simplefilter("ignore")
        with atomic_path(path) as tmp:
            torch.onnx.export(module, (ids, mask), str(tmp), input_names=["ids", "mask"], output_names=["out"],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _quantize(source: Path, path: Path) -> None:
    """``source``'s graph with its weights quantised to int8 per output channel, activations
    quantised on the fly (ONNX Runtime's dynamic quantisation)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(path) as tmp:
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True)


def agreement(a: OnnxForward, b: OnnxForward, probe: tuple[Tensor, Tensor]) -> float:
    """Mean cosine between two graphs' hidden states ``(n, L, k, d)`` over the probe's real
    tokens (padding left out) and its ``k`` states."""
    ids, mask = probe
    valid = mask.bool()
    return float(torch.nn.functional.cosine_similarity(a(ids, mask)[valid], b(ids, mask)[valid], dim=-1).mean())


def _cached_session(path: Path, key: str, make: Callable[[Path], dict[str, Any]], log: Callable[[str], None],
                    doing: str) -> tuple[OnnxForward, dict[str, Any]]:
    """A session on the checked file ``path`` of ``key`` and its record, made by ``make(path)``
    (said on ``log`` as ``doing``; it returns what the record adds) when absent or failing its
    check."""
    sidecar = path.with_suffix(".json")
    if path.exists():
        problem = ""
        try:
            recorded = json.loads(sidecar.read_text(encoding="utf-8"))
            if not isinstance(recorded, dict) or recorded.get("key") != key or memo_sha256(path) != recorded.get("sha256"):
                problem = "its checksum does not match"
        except (OSError, ValueError) as exc:
            problem = f"its record is unreadable ({exc.__class__.__name__})"
        if not problem:
            try:
                return OnnxForward(path), recorded
            except Exception as exc:  # onnxruntime raises its own exception types for bad files
                problem = f"ONNX Runtime cannot read it ({str(exc).splitlines()[0][:120]})"
        warnings.warn(f"{path}: {problem}; making it again", CacheWarning, stacklevel=3)
    log(f"{doing} (cached as {path})")
    record = {"key": key, **make(path), "sha256": memo_sha256(path), "format": FORMAT, "opset": OPSET,
              "torch": torch.__version__}
    atomic_write_json(sidecar, record)
    return OnnxForward(path), record


def onnx_forward(key: str, build: Callable[[], nn.Module], log: Callable[[str], None] = _stderr,
                 probe: tuple[Tensor, Tensor] | None = None) -> OnnxForward:
    """The cached export named ``key`` as a session; exported from ``build()`` when it is not
    cached or fails its check (see the module docstring), which takes seconds, once.  With
    ``probe`` (``ids, mask`` of typical inputs), the export's int8 form, checked against the
    float32 one on ``probe`` when it is made (:data:`INT8_MIN_COSINE`)."""
    folder = cache_root() / "onnx"
    fp32 = folder / f"{key[:32]}.onnx"

    def export(path: Path) -> dict[str, Any]:
        _export(build(), path)
        return {}

    exported = "exporting the transformer to ONNX once"
    if probe is None:
        return _cached_session(fp32, key, export, log, exported)[0]

    def quantize(path: Path) -> dict[str, Any]:
        source = _cached_session(fp32, key, export, log, exported)[0]
        _quantize(source.path, path)
        return {"probe_cosine": agreement(source, OnnxForward(path), probe)}

    session, record = _cached_session(folder / f"{key[:32]}-int8.onnx", f"{key}/int8", quantize, log,
                                      "quantising the ONNX export to int8 once")
    cosine = record.get("probe_cosine")
    if not isinstance(cosine, float) or cosine < INT8_MIN_COSINE:
        measured = f"{cosine:.2f}" if isinstance(cosine, float) else "not recorded"
        raise ConfigError(f"runtime 'onnxruntime-int8': int8 weights move this transformer's hidden states too "
                          f"far (mean cosine {measured} to float32 on probe inputs, below {INT8_MIN_COSINE}); "
                          "use --runtime onnxruntime")
    return session

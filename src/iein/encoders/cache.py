"""A content-addressed on-disk cache of utterance vectors (frozen pretrained encoders).

Computing a frozen Transformer's vector for each of MELD's ~14k utterances costs minutes on
a CPU; every run with the same base model and the same inputs would recompute exactly the
same numbers.  This cache stores them once.

*Content-addressed*: an entry's key is ``sha256(namespace id || payload)`` where the
namespace says which function produced the vector (base-model weights hash, pooling, output
size, format version) and the payload is the exact model input (the token ids).  Whatever
changes the input (text, speaker names, context window, truncation, tokenizer) changes the
ids and so the key; whatever changes the function changes the namespace.  There is no
invalidation to get wrong: a key either names the right vector or nothing.

Layout under the cache root (``$IEIN_CACHE_DIR``, default ``~/.cache/iein``)::

    features/<namespace id[:32]>/namespace.json   what produced these vectors (for people)
    features/<namespace id[:32]>/<sha[:32]>.pack  n keys + an (n, dim) float32 matrix
    hashes/<sha256 of a path>.json                memoised file hashes (size + mtime)

A pack is written once, atomically (temporary file + ``os.replace``), and never modified;
one call of :meth:`FeatureCache.put` writes one pack (one per corpus split), so a corpus is
a handful of files, not 14k.  Each pack carries the SHA-256 of its payload: a truncated or
corrupted pack is reported with a :class:`RuntimeWarning`, deleted and its vectors are
recomputed by the caller -- never silently used.  When a namespace holds more than
:data:`MAX_PACKS` packs they are merged into one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..atomic import atomic_path, atomic_write_json
from ..utils import sha256_file

__all__ = ["cache_root", "FeatureCache", "memo_sha256", "CacheWarning", "vectors_once", "regroup"]

#: Bump when the meaning of a key or the pack layout changes: old packs become unreachable.
FORMAT = "iein-feature-cache/1"
MAGIC = b"IEINFC01"
KEY_BYTES = 32  # a raw SHA-256 digest
DTYPE = np.dtype("<f4")
#: A namespace with more packs than this is compacted into one on the next write.
MAX_PACKS = 8


class CacheWarning(RuntimeWarning):
    """A cache file could not be used (corrupt, truncated, unreadable); it is recomputed."""


def cache_root() -> Path:
    """``$IEIN_CACHE_DIR`` if set, else ``~/.cache/iein``: extracted models, features, hashes."""
    return Path(os.environ.get("IEIN_CACHE_DIR") or "~/.cache/iein").expanduser()


# --------------------------------------------------------------------------------------------
# memoised file hashes


def memo_sha256(path: str | os.PathLike[str], memo_dir: Path | None = None) -> str:
    """SHA-256 of a (large) file, memoised by (path, size, mtime).

    Hashing a 438 MB weight file takes seconds; every run needs the hash (cache namespace,
    checkpoint check).  The memo is keyed by the absolute path and trusted only while the
    file's size and modification time (ns) are unchanged -- a rewritten file is rehashed.
    A memo directory that cannot be written only costs the rehash next time.
    """
    path = Path(path).resolve()
    st = path.stat()
    memo_dir = memo_dir if memo_dir is not None else cache_root() / "hashes"
    memo = memo_dir / f"{hashlib.sha256(str(path).encode()).hexdigest()[:32]}.json"
    stamp = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    with contextlib.suppress(OSError, ValueError, TypeError):
        known = json.loads(memo.read_text(encoding="utf-8"))
        if {k: known.get(k) for k in stamp} == stamp and isinstance(known.get("sha256"), str):
            return known["sha256"]
    digest = sha256_file(path)
    with contextlib.suppress(OSError):
        atomic_write_json(memo, {**stamp, "sha256": digest})
    return digest


# --------------------------------------------------------------------------------------------
# packs


def _namespace_id(namespace: Mapping[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT, **namespace}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class CorruptPack(Exception):
    pass


def _read_pack(path: Path, namespace_id: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``keys (n, 32) uint8`` and ``vectors (n, dim) float32`` of a pack, checksum verified."""
    data = path.read_bytes()
    if len(data) < len(MAGIC) + 4 or not data.startswith(MAGIC):
        raise CorruptPack("not a feature pack (bad magic)")
    (hlen,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4 + hlen
    try:
        header = json.loads(data[len(MAGIC) + 4: start].decode("utf-8"))
        n, d, want = int(header["n"]), int(header["dim"]), str(header["sha256"])
        ns = header["namespace"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CorruptPack(f"unreadable header ({exc})") from None
    if ns != namespace_id or d != dim:
        raise CorruptPack(f"belongs to namespace {str(ns)[:12]}/dim {d}, not {namespace_id[:12]}/dim {dim}")
    payload = memoryview(data)[start:]
    if len(payload) != n * (KEY_BYTES + d * DTYPE.itemsize):
        raise CorruptPack(f"truncated: {len(payload)} payload bytes for {n} vectors of dim {d}")
    if hashlib.sha256(payload).hexdigest() != want:
        raise CorruptPack("checksum mismatch")
    keys = np.frombuffer(payload, dtype=np.uint8, count=n * KEY_BYTES).reshape(n, KEY_BYTES)
    vectors = np.frombuffer(payload, dtype=DTYPE, offset=n * KEY_BYTES).reshape(n, d)
    return keys, vectors.astype(np.float32, copy=False)


def _write_pack(directory: Path, namespace_id: str, keys: np.ndarray, vectors: np.ndarray) -> Path:
    payload = keys.astype(np.uint8).tobytes() + np.ascontiguousarray(vectors, dtype=DTYPE).tobytes()
    digest = hashlib.sha256(payload).hexdigest()
    header = json.dumps({"namespace": namespace_id, "n": int(len(keys)), "dim": int(vectors.shape[1]),
                         "dtype": DTYPE.str, "sha256": digest}).encode()
    path = directory / f"{digest[:32]}.pack"
    with atomic_path(path) as tmp:  # same content -> same name: a concurrent twin is harmless
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + struct.pack("<I", len(header)) + header)
            fh.write(payload)
    return path


class FeatureCache:
    """Vectors of one namespace (one producing function), stored in packs under ``root``.

    ``namespace`` must hold everything besides the payload that determines a vector (base
    weights hash, pooling, ...); ``dim`` is the vector size.  Usage::

        cache = FeatureCache(root, {"base_sha256": ..., "pooling": "mean"}, dim=384)
        keys = [cache.key(ids.tobytes()) for ids in inputs]
        found = cache.get_many(keys)            # key -> vector, for the keys it holds
        cache.put(new_keys, new_vectors)        # one new pack
    """

    def __init__(self, root: str | os.PathLike[str], namespace: Mapping[str, Any], dim: int) -> None:
        self.namespace = dict(namespace)
        self.namespace_id = _namespace_id(self.namespace)
        self.dim = int(dim)
        self.dir = Path(root).expanduser() / self.namespace_id[:32]
        self._salt = bytes.fromhex(self.namespace_id)

    def key(self, payload: bytes) -> bytes:
        """The entry key of ``payload`` (the exact model input) in this namespace."""
        return hashlib.sha256(self._salt + payload).digest()

    def _packs(self) -> list[Path]:
        return sorted(self.dir.glob("*.pack")) if self.dir.is_dir() else []

    def _load(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """A pack's contents; ``None`` (with a warning, the file deleted) if it is corrupt."""
        try:
            return _read_pack(path, self.namespace_id, self.dim)
        except FileNotFoundError:  # merged away by a concurrent writer: its entries are misses
            return None
        except (CorruptPack, OSError) as exc:
            warnings.warn(f"feature cache: {path}: {exc}; ignoring it (its vectors are recomputed)",
                          CacheWarning, stacklevel=3)
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, np.ndarray]:
        """The cached vectors of those ``keys`` that are present (rows of read-only arrays)."""
        wanted = set(keys)
        found: dict[bytes, np.ndarray] = {}
        for path in self._packs():
            if len(found) == len(wanted):
                break
            pack = self._load(path)
            if pack is None:
                continue
            pkeys, vectors = pack
            for i, k in enumerate(pkeys):
                kb = k.tobytes()
                if kb in wanted and kb not in found:
                    found[kb] = vectors[i]
        return found

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` under ``keys[i]`` as one new pack (atomic).  A cache that
        cannot be written (read-only disk, full disk) warns and the run goes on."""
        if not len(keys):
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(f"vectors of shape {vectors.shape} for {len(keys)} keys of dim {self.dim}")
        karr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = self.dir / "namespace.json"
            if not meta.exists():
                atomic_write_json(meta, {"format": FORMAT, "id": self.namespace_id, "dim": self.dim,
                                         **self.namespace})
            _write_pack(self.dir, self.namespace_id, karr, vectors)
            if len(self._packs()) > MAX_PACKS:
                self.compact()
        except OSError as exc:
            warnings.warn(f"feature cache: cannot write to {self.dir}: {exc} (features not cached)",
                          CacheWarning, stacklevel=2)

    def compact(self) -> None:
        """Merge every pack of the namespace into one (first occurrence of a key wins)."""
        packs = self._packs()
        keys: list[np.ndarray] = []
        vecs: list[np.ndarray] = []
        seen: set[bytes] = set()
        for path in packs:
            pack = self._load(path)
            if pack is None:
                continue
            pk, pv = pack
            keep = []
            for i, k in enumerate(pk):
                kb = k.tobytes()
                if kb not in seen:
                    seen.add(kb)
                    keep.append(i)
            keys.append(pk[keep])
            vecs.append(pv[keep])
        if not keys:
            return
        merged = _write_pack(self.dir, self.namespace_id, np.concatenate(keys), np.concatenate(vecs))
        for path in packs:
            if path != merged:
                with contextlib.suppress(OSError):
                    path.unlink()


def vectors_once(payloads: Sequence[bytes], compute: Callable[[list[int]], np.ndarray],
                 cache: FeatureCache | None = None) -> tuple[list[np.ndarray], dict[str, int]]:
    """One vector per payload (an utterance's exact encoder input), each distinct payload
    computed once -- MELD repeats "Yeah." in every scene.  ``compute`` gets the indices of the
    first occurrences of the payloads still missing and returns their ``(k, dim)`` vectors;
    with a ``cache`` those are read from it first and written to it after.  Returns the rows
    (shared between equal payloads, read-only when cached) and counts for the log."""
    key = cache.key if cache is not None else (lambda payload: hashlib.sha256(payload).digest())
    keys = [key(p) for p in payloads]
    first: dict[bytes, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    found = cache.get_many(first) if cache is not None else {}
    todo = [k for k in first if k not in found]
    if todo:
        computed = compute([first[k] for k in todo])
        if cache is not None:
            cache.put(todo, computed)
        found.update(zip(todo, computed))
    return [found[k] for k in keys], {"unique": len(first), "cached": len(first) - len(todo), "computed": len(todo)}


def regroup(rows: Sequence[Any], like: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Cut a flat list back into the conversations it was flattened from."""
    out, start = [], 0
    for group in like:
        out.append(list(rows[start: start + len(group)]))
        start += len(group)
    return out

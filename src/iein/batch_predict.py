"""``iein predict --backend ray``: label a large input on a Ray cluster with Ray Data.

The local ``iein predict`` streams one file through one :class:`~iein.recognizer.Recognizer`
in one process.  This module spreads the same work over a cluster, with the same output::

    files ──read tasks (driver's node)──> blocks of whole conversations
          ──map_batches(Labeller actors, one Recognizer each)──> output text per conversation
          ──driver, in input order──> one file, written atomically (or stdout)

* **Reading.**  A read task per input file (a directory: every ``.jsonl``/``.ndjson``/
  ``.json``/``.csv`` below it, in name order) streams it through the very reader the local
  path uses (:func:`iein.data.generic.iter_conversations`: same validation, same one-line
  errors, same default ids).  A conversation is one row, so it is never split, whatever
  Ray does with blocks; each row carries its place in the input, ``(file, seq)``.  Ray Data
  gathers the rows into blocks of about 1/(:data:`BLOCKS_PER_ACTOR` x actors) of the input,
  so every actor gets several.  Read tasks run on the driver's node (where the input is)
  and reserve no CPU, so a cluster filled with labelling actors still reads; one large file
  is read by one task, which costs little next to the model.
* **Labelling.**  ``map_batches`` with a callable class: each actor loads the model once
  (the checkpoint's bytes travel with the actor's arguments, through Ray's object store,
  so other nodes need no copy of the file), pins its torch threads to its CPUs (``--threads``), and turns every
  conversation into its finished output text with the local path's own formatters
  (:func:`~iein.output_formats.jsonl_record`, :func:`~iein.output_formats.csv_rows`), so the two
  backends write the same records.
* **Writing.**  Ray Data runs with ``preserve_order``: blocks come back in input order, and
  the driver checks every row's ``(file, seq)`` is the next one before writing it, so each
  conversation is in the output once, in input order (anything else is an error, not a
  silently reordered file).  Ids must be unique across the files of a directory, as they
  are within a file.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import ConfigError, DataError, IeinError

#: A read task hands Ray blocks of this many inference batches of conversations.
BLOCK_BATCHES = 4
#: Ray Data blocks (one actor call each) are sized so each actor gets about this many ...
BLOCKS_PER_ACTOR = 4
#: ... within these bounds (bytes of input).
MIN_BLOCK_BYTES = 64 * 1024
MAX_BLOCK_BYTES = 128 * 1024 * 1024
#: Input files of a directory, by extension (as the generic reader knows them).
INPUT_EXTENSIONS = (".jsonl", ".ndjson", ".json", ".csv")


# --- input --------------------------------------------------------------------------------

def input_files(path: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """``(absolute path, name for messages)`` of the files to label: ``path`` itself, or every
    file with a known extension below the folder ``path`` (hidden ones skipped), sorted by
    their path inside it.  Absolute, since a Ray worker does not share the driver's working
    folder; the name is the path as the user wrote it, as the local path reports it."""
    text = os.fspath(path)
    if text == "-":
        raise ConfigError("--backend ray reads files: give INPUT as a file or a folder, not stdin")
    p = Path(text).expanduser()
    if p.is_file():
        return [(p.absolute(), text)]
    if not p.is_dir():
        raise ConfigError(f"{text}: no such file or folder")
    found = sorted(f.relative_to(p) for f in p.rglob("*")
                   if f.is_file() and f.suffix.lower() in INPUT_EXTENSIONS
                   and not any(part.startswith(".") for part in f.relative_to(p).parts))
    if not found:
        raise ConfigError(f"{text}: no {', '.join(INPUT_EXTENSIONS)} files in this folder")
    return [((p / rel).absolute(), str(Path(text) / rel)) for rel in found]


class _NamedFile(io.BufferedReader):
    """A file opened by its absolute path that calls itself by the name the user gave, so
    the reader's messages and default ids (``<stem>:<line>``) are the local path's."""

    def __init__(self, path: Path, name: str) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._display_name = name

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._display_name


def read_input_file(path: Path, name: str, fmt: str, file_index: int, block_rows: int) -> Iterator[Any]:
    """A read task: the conversations of one file (in format ``fmt``: a stream's would be
    guessed) as Arrow blocks of whole conversations, each row ``(file, seq, conv)`` with
    the conversation as JSON text."""
    import pyarrow as pa

    from .data.generic import MAX_UTTERANCES, iter_conversations
    from .recognizer import MAX_UTTERANCE_CHARS

    seqs: list[int] = []
    rows: list[str] = []

    def block() -> Any:
        return pa.table({"file": pa.array([file_index] * len(seqs), pa.int32()),
                         "seq": pa.array(seqs, pa.int64()), "conv": pa.array(rows, pa.large_string())})

    try:
        fh = _NamedFile(path, name)
    except OSError as exc:
        raise DataError(f"{name}: cannot open: {exc.strerror or exc}") from None
    with fh:
        convs = iter_conversations(fh, fmt, max_utterance_chars=MAX_UTTERANCE_CHARS, max_utterances=MAX_UTTERANCES)
        for seq, conv in enumerate(convs):
            seqs.append(seq)
            rows.append(json.dumps({"id": conv.id, "utterances": [[u.speaker, u.text, u.label]
                                                                  for u in conv.utterances]}, ensure_ascii=False))
            if len(rows) >= block_rows:
                yield block()
                seqs, rows = [], []
    if rows:
        yield block()


def _block_metadata(path: Path) -> Any:
    """Ray's BlockMetadata for one file (its fields moved between Ray releases)."""
    from ray.data.block import BlockMetadata

    given = {"num_rows": None, "size_bytes": path.stat().st_size, "input_files": [str(path)],
             "exec_stats": None, "schema": None}
    accepted = inspect.signature(BlockMetadata).parameters
    return BlockMetadata(**{k: v for k, v in given.items() if k in accepted})


def _datasource(files: list[tuple[Path, str]], fmt: str | None, block_rows: int) -> Any:
    """A Ray Data source of whole conversations: one read task per file, on the driver's node.
    The format of each file (``fmt``, else its extension) is settled here, so a file that
    has none fails now, in the driver."""
    from ray.data.datasource import Datasource, ReadTask

    from .data.generic import format_of

    formats = [format_of(name, fmt) for _, name in files]

    class ConversationFiles(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return sum(path.stat().st_size for path, _ in files)

        def get_read_tasks(self, parallelism: int, **_: Any) -> list[Any]:
            return [ReadTask(functools.partial(read_input_file, path, name, formats[i], i, block_rows),
                             _block_metadata(path)) for i, (path, name) in enumerate(files)]

        @property
        def supports_distributed_reads(self) -> bool:
            return False  # the input is on the driver's machine

    return ConversationFiles()


# --- labelling ----------------------------------------------------------------------------

class Labeller:
    """A Ray Data actor: one Recognizer, loaded once, turning conversations into output text."""

    def __init__(self, checkpoint: bytes, model_name: str, names: list[str], fmt: str, batch_size: int,
                 threads: int, device: str = "cpu") -> None:
        import tempfile

        import torch

        from .checkpoint import load_checkpoint
        from .recognizer import Recognizer

        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="iein-") as tmp:
            path = Path(tmp) / "model.safetensors"  # safetensors reads a file
            path.write_bytes(checkpoint)
            self.recognizer = Recognizer(load_checkpoint(path), source=model_name, device=device)
        self.names, self.fmt, self.batch_size = names, fmt, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .data.conversation import Conversation, Utterance
        from .output_formats import csv_rows, jsonl_record

        files, seqs = batch["file"], batch["seq"]
        out: dict[str, list[Any]] = {"text": [], "id": [], "utterances": [], "empty": []}
        # one iter_predictions per input file, so messages name the file (a batch may span two)
        start = 0
        while start < len(files):
            other = np.flatnonzero(files[start:] != files[start])
            stop = start + int(other[0]) if len(other) else len(files)
            convs = []
            for raw in batch["conv"][start:stop]:
                obj = json.loads(raw)
                convs.append(Conversation(obj["id"], [Utterance(s, t, g) for s, t, g in obj["utterances"]]))
            preds = self.recognizer.iter_predictions(convs, self.batch_size, source=self.names[int(files[start])])
            for pred in preds:
                if self.fmt == "csv":
                    buf = io.StringIO()
                    csv.writer(buf, lineterminator="\n").writerows(csv_rows(pred))
                    out["text"].append(buf.getvalue())
                else:
                    out["text"].append(json.dumps(jsonl_record(pred), ensure_ascii=False) + "\n")
                out["id"].append(pred.conversation.id)
                out["utterances"].append(len(pred.conversation))
                out["empty"].append(sum(not u.text for u in pred.conversation.utterances))
            start = stop
        return {"file": files, "seq": seqs, "id": np.array(out["id"], dtype=object),
                "text": np.array(out["text"], dtype=object), "utterances": np.array(out["utterances"], np.int64),
                "empty": np.array(out["empty"], np.int64)}


def _user_error(exc: BaseException) -> IeinError | None:
    """The iein error (bad input, bad model) behind a Ray error, if that is what it is.

    Ray re-raises a task's exception as ``RayTaskError(<its class>)``, with the remote
    traceback in its message, and Ray Data adds lines about retries to the original's: the
    user gets the original's first line, as the local path prints it (iein's errors are one
    line)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, IeinError) and type(e).__module__ == IeinError.__module__:
            lines = str(e).splitlines()
            return type(e)(lines[0] if lines else "")
        cause = getattr(e, "cause", None)
        todo += [e.__context__, e.__cause__, cause if isinstance(cause, BaseException) else None]
    return None


# --- the whole job ------------------------------------------------------------------------

@contextlib.contextmanager
def _data_context(block_bytes: int) -> Iterator[None]:
    """Ray Data settings of this job, restored afterwards: keep input order; blocks of at
    most ``block_bytes`` (see :func:`predict_on_ray`); Ray's progress bars and progress log
    off (the driver shows one bar of utterances, as locally), and so its hint that a small
    input leaves some actors idle."""
    import logging
    import warnings

    from ray.data import DataContext

    ctx = DataContext.get_current()
    wanted = {"target_max_block_size": block_bytes, "enable_progress_bars": False,
              "print_on_execution_start": False}  # the last one is newer than some Ray releases
    saved = {k: getattr(ctx, k) for k in wanted if hasattr(ctx, k)}
    order = ctx.execution_options.preserve_order
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    for k in saved:
        setattr(ctx, k, wanted[k])
    ctx.execution_options.preserve_order = True
    data_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
            yield
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
        ctx.execution_options.preserve_order = order
        data_log.setLevel(level)


def _write_in_order(batches: Any, fh: Any, files: Sequence[tuple[Path, str]], bar: Any) -> tuple[int, int, int]:
    """Write the actors' records as they arrive, checking they come in input order and that no
    conversation id repeats across files: (conversations, utterances, empty texts)."""
    n_convs = n_utts = n_empty = 0
    last = (-1, -1)
    seen: dict[str, int] = {}
    try:
        for batch in batches:
            for f, s, conv_id, text, n, e in zip(batch["file"], batch["seq"], batch["id"], batch["text"],
                                                 batch["utterances"], batch["empty"]):
                f, s = int(f), int(s)
                if s != (last[1] + 1 if f == last[0] else 0) or f < last[0]:
                    raise RuntimeError(f"Ray Data returned conversation {s} of file {f} after "
                                       f"{last[1]} of file {last[0]}: the output would not be in input order")
                last = (f, s)
                if conv_id in seen and seen[conv_id] != f:
                    raise DataError(f"{files[f][1]}: conversation id {conv_id!r} is also in "
                                    f"{files[seen[conv_id]][1]}; ids must be unique across the input")
                seen[conv_id] = f
                fh.write(text)
                n_convs, n_utts, n_empty = n_convs + 1, n_utts + int(n), n_empty + int(e)
                bar.update(int(n))
    except Exception as exc:
        err = _user_error(exc)
        if err is None:
            raise
        raise err from None
    return n_convs, n_utts, n_empty


def _check_sizes(batch_size: int, threads: int, concurrency: int | None) -> None:
    """The sizes of a Ray labelling job, checked before a cluster starts."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")


def predict_on_ray(
    input_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    model: str | os.PathLike[str] | None = None,
    fmt: str = "jsonl",
    input_format: str | None = None,
    batch_size: int = 32,
    threads: int = 1,
    concurrency: int | None = None,
    address: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    log: Any = None,
) -> tuple[int, int, int]:
    """Label ``input_path`` (a file or a folder of files) with ``model`` (None: the default
    shipped model, :func:`iein.shipped.default_model`) on the Ray cluster at ``address``
    (None: a local one) and write the local ``iein predict``'s records, in input order, to
    ``out`` (atomically) or stdout.  ``concurrency`` actors (default: as many as the
    cluster's CPUs allow) of ``threads`` CPUs each, and one GPU each when ``device`` is
    CUDA (any ``cuda:N`` means the GPU Ray gives the actor: it sees only that one).  Returns (conversations, utterances,
    utterances with empty text)."""
    from tqdm.auto import tqdm

    from .output_formats import csv_header
    from .recognizer import Recognizer, resolve_model
    from .reproduce.ray_backend import connected, import_ray
    from .atomic import atomic_path
    from .shipped import default_model
    from .utils import plural

    if model is None:
        model = default_model()[0]
    _check_sizes(batch_size, threads, concurrency)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    import_ray()  # one line when Ray is missing
    # everything that can be checked here fails here, before a cluster starts
    files = input_files(input_path)
    source = _datasource(files, input_format, BLOCK_BATCHES * batch_size)
    path = resolve_model(model)
    steps = Recognizer.load(model).steps  # a bad or oracle checkpoint fails in one line
    with contextlib.ExitStack() as job:
        ray = job.enter_context(connected(address))
        import ray.data

        resources = ray.cluster_resources()
        cpus, gpus, gpu = resources.get("CPU", 0), int(resources.get("GPU", 0)), str(device).startswith("cuda")
        if gpu and not gpus:  # Ray would wait for one forever
            raise ConfigError(f"--device {device}: the Ray cluster has no GPU")
        actors = concurrency or max(1, min(int(cpus // threads), gpus if gpu else int(cpus)))
        log(f"ray: labelling {plural(len(files), 'file')} with {plural(actors, 'actor')} of "
            f"{plural(threads, 'CPU')} each ({cpus:g} CPUs in the cluster)")
        # A block is one actor call.  Ray Data gathers a read task's rows into blocks of up
        # to its target size (128 MiB by default: a whole file, one actor); smaller blocks
        # give every actor several, and the first results come sooner.
        total = sum(p.stat().st_size for p, _ in files)
        job.enter_context(_data_context(min(MAX_BLOCK_BYTES, max(MIN_BLOCK_BYTES,
                                                                   total // (BLOCKS_PER_ACTOR * actors)))))
        ds = ray.data.read_datasource(source, num_cpus=0, override_num_blocks=len(files))
        ds = ds.map_batches(Labeller, batch_size=None, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads, num_gpus=int(gpu),
                            fn_constructor_args=(path.read_bytes(), os.fspath(model), [name for _, name in files],
                                                 fmt, batch_size, threads, "cuda" if gpu else device))
        with contextlib.ExitStack() as stack:
            if out is not None:
                fh = stack.enter_context(open(stack.enter_context(atomic_path(out)), "w", encoding="utf-8",
                                              newline=""))
            else:
                fh = sys.stdout
                if (fh.encoding or "").lower().replace("-", "") != "utf8" and hasattr(fh, "reconfigure"):
                    fh.reconfigure(encoding="utf-8")
            if fmt == "csv":
                csv.writer(fh, lineterminator="\n").writerow(csv_header(steps))
            bar = stack.enter_context(tqdm(unit="utt", desc="predict", file=sys.stderr, disable=not progress))
            n_convs, n_utts, n_empty = _write_in_order(ds.iter_batches(batch_size=None, batch_format="numpy"), fh,
                                                       files, bar)
            fh.flush()
    return n_convs, n_utts, n_empty


__all__ = ["BLOCK_BATCHES", "INPUT_EXTENSIONS", "input_files", "predict_on_ray"]

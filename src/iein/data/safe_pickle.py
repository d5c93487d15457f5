"""Load pickles from the internet without letting them run code.

A pickle can name any importable callable (``os.system``, ``subprocess.Popen`` ...) and
have it called while loading.  Community ERC datasets (e.g. the COSMIC IEMOCAP pickle)
only hold dicts, lists, strings and ints, so :func:`safe_load` refuses every global but
the three that old pickle protocols use to write sets and bytes: nothing but plain
containers and scalars can be built.
"""
from __future__ import annotations

import os
import pickle
from typing import IO, Any

from ..errors import DataError
from .text_io import open_source, source_name


def _empty_bytes(*args: Any) -> bytes:
    if args:
        raise pickle.UnpicklingError("bytes() is only allowed without arguments")
    return b""


def _latin1_bytes(text: Any, encoding: Any = "latin1", *rest: Any) -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or rest:
        raise pickle.UnpicklingError("_codecs.encode is only allowed as (str, 'latin1')")
    return text.encode("latin-1")


# Protocols 0-2 have no opcodes for sets and bytes: they pickle them as calls to these
# globals (``__builtin__`` in Python 2 pickles).  Each only builds a plain value from data
# already loaded; the bytes ones accept exactly the call pickle itself writes.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(m, t.__name__): t for m in ("builtins", "__builtin__") for t in (set, frozenset)},
    **{(m, "bytes"): _empty_bytes for m in ("builtins", "__builtin__")},
    ("_codecs", "encode"): _latin1_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], name: str, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self._name = name

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DataError(
                f"{self._name}: refusing to load global {module}.{name} from a pickle "
                "(only plain containers and scalars are allowed)"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._name}: refusing a persistent id in a pickle")


def safe_load(path_or_file: str | os.PathLike[str] | IO[bytes], encoding: str = "latin1") -> Any:
    """Unpickle dict/list/tuple/set/str/bytes/int/float/bool/None only.

    ``encoding='latin1'`` reads Python 2 pickles byte for byte, as their authors wrote them.
    Any refused global, truncated or corrupted data is a one-line DataError naming the file.
    """
    name = source_name(path_or_file)
    with open_source(path_or_file) as f:
        try:
            return _RestrictedUnpickler(f, name, encoding).load()  # type: ignore[arg-type]
        except DataError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
                KeyError, AttributeError, MemoryError, UnicodeDecodeError) as e:
            raise DataError(f"{name}: not a valid pickle: {type(e).__name__}: {e}") from None

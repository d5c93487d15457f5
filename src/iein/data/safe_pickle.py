"""Load pickles from the internet without letting them run code.

A pickle can name any importable callable (``os.system``, ``subprocess.Popen`` ...) and
have it called while loading.  Community ERC datasets (e.g. the COSMIC IEMOCAP pickle)
only hold dicts, lists, strings and ints, so :func:`safe_load` refuses every global:
nothing but the pickle protocol's own containers and scalars can be built.
"""
from __future__ import annotations

import os
import pickle
from typing import IO, Any

from ..errors import DataError
from ._io import open_source, source_name

# Protocols 0-3 have no opcode for sets: they pickle ``set(list)`` through these two
# builtins (``__builtin__`` in Python 2 pickles).  Both only build a container from data
# already loaded, so they are safe.
_ALLOWED_GLOBALS = {
    (module, t.__name__): t
    for module in ("builtins", "__builtin__")
    for t in (set, frozenset)
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

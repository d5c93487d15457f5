"""The restricted unpickler: plain data loads, anything naming a global is refused unrun."""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest

from iein.data.safe_pickle import safe_load
from iein.errors import DataError

PLAIN = {
    "ints": [0, -1, 2**70], "floats": (1.5, float("inf")), "text": "’é", "bytes": b"\x00\xff",
    "flags": [True, False, None], "set": {1, 2}, "frozen": frozenset({"a"}), "nested": {"x": [{}]},
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_loads(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(PLAIN, protocol=protocol))
    assert safe_load(path) == PLAIN
    assert safe_load(io.BytesIO(path.read_bytes())) == PLAIN


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_os_system_refused_without_running(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([1, _Exploit(marker)], protocol=protocol))
    with pytest.raises(DataError) as err:
        safe_load(path)
    msg = str(err.value)
    assert str(path) in msg and "system" in msg and "\n" not in msg
    assert not marker.exists()


@pytest.mark.parametrize("payload,global_name", [
    (b"cos\nsystem\n(S'touch pwned'\ntR.", "os.system"),
    (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),
    (b"c__builtin__\n__import__\n(S'os'\ntR.", "__builtin__.__import__"),
    (b"(ios\nsystem\nS'touch pwned'\no.", "os.system"),  # INST opcode
])
def test_any_global_refused(tmp_path: Path, payload: bytes, global_name: str) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=f"refusing to load global {global_name}"):
        safe_load(path)
    assert not (tmp_path / "pwned").exists()


def test_broken_pickles_are_data_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(PLAIN)[:-10])
    with pytest.raises(DataError, match="bad.pkl: not a valid pickle"):
        safe_load(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="bad.pkl: not a valid pickle"):
        safe_load(path)
    path.write_bytes(b"P0\n.")  # persistent id
    with pytest.raises(DataError, match="persistent id"):
        safe_load(path)
    with pytest.raises(DataError, match="cannot open"):
        safe_load(tmp_path / "missing.pkl")


def test_bytes_globals_only_as_pickle_writes_them(tmp_path: Path) -> None:
    path = tmp_path / "odd.pkl"
    path.write_bytes(b"c_codecs\nencode\n(Vx\nVrot13\ntR.")
    with pytest.raises(DataError, match="only allowed as"):
        safe_load(path)
    path.write_bytes(b"c__builtin__\nbytes\n(I1000000000000\ntR.")
    with pytest.raises(DataError, match="only allowed without arguments"):
        safe_load(path)

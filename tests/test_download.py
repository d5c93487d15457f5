"""Downloads against a local HTTP mirror built at test time from the shared corpora."""
from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from iein.data import download as dl
from iein.data.dailydialog import read_dailydialog
from iein.data.meld import read_meld
from iein.errors import DataError

MELD_PATH = "declare-lab/MELD/master/data/MELD"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _serve_meld(root: Path, shared_data: Path) -> Path:
    folder = root / MELD_PATH
    folder.mkdir(parents=True)
    for name in dl.SHA256["meld"]:
        shutil.copyfile(shared_data / "meld" / name, folder / name)
    return folder


def test_pinned_hashes_match_shared_sums(shared_data: Path) -> None:
    sums = {}
    for line in (shared_data / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split()
        sums[rel] = digest
    for name, files in dl.SHA256.items():
        for file, digest in files.items():
            assert sums[f"{name}/{file}"] == digest


def test_mirror_url() -> None:
    assert dl.mirror_url(dl.DAILYDIALOG_URL, None) == dl.DAILYDIALOG_URL
    assert dl.mirror_url(dl.MELD_URL.format(file="a.csv"), "http://m.example/x/") == \
        "http://m.example/x/declare-lab/MELD/master/data/MELD/a.csv"


def test_meld_download(mirror: tuple[Path, str], shared_data: Path, tmp_path: Path) -> None:
    root, base = mirror
    _serve_meld(root, shared_data)
    dest = tmp_path / "data" / "meld"
    assert dl.download("meld", dest, base_url=base, progress=False) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(dl.SHA256["meld"])
    for name, digest in dl.SHA256["meld"].items():
        assert _sha(dest / name) == digest
    assert read_meld(dest).stats("dev") == (114, 1109)
    # Files already present and valid are not fetched again (the mirror is gone).
    shutil.rmtree(root / "declare-lab")
    dl.download("meld", dest, base_url=base, progress=False)


def test_meld_corrupted_download_leaves_nothing(
    mirror: tuple[Path, str], shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base = mirror
    folder = _serve_meld(root, shared_data)
    first = next(iter(dl.SHA256["meld"]))
    bad = folder / first
    bad.write_bytes(bad.read_bytes().replace(b"neutral", b"NEUTRAL", 1))
    dest = tmp_path / "meld"
    monkeypatch.setenv(dl.ENV_BASE_URL, base)  # the mirror via the environment this time
    with pytest.raises(DataError) as err:
        dl.download("meld", dest, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and first in msg and "sha256 mismatch" in msg
    assert dl.SHA256["meld"][first] in msg and _sha(bad) in msg
    assert not dest.exists()  # not even the folder the download created


def test_http_error_leaves_nothing(mirror: tuple[Path, str], tmp_path: Path) -> None:
    _, base = mirror
    dest = tmp_path / "meld"
    with pytest.raises(DataError, match=r"download failed: HTTP 404"):
        dl.download("meld", dest, base_url=base, progress=False)
    assert not dest.exists()  # not even the folder the download created


def _serve_dailydialog(root: Path, shared_data: Path, corrupt: str | None = None) -> None:
    (root / "files").mkdir()
    with zipfile.ZipFile(root / "files" / "ijcnlp_dailydialog.zip", "w") as release:
        release.writestr("ijcnlp_dailydialog/readme.txt", "DailyDialog\n")
        for final, member in dl.DAILYDIALOG_MEMBERS.items():
            data = (shared_data / "dailydialog" / final).read_bytes()
            release.writestr(member, data + (b"junk" if final == corrupt else b""))


def test_dailydialog_download(mirror: tuple[Path, str], shared_data: Path, tmp_path: Path) -> None:
    root, base = mirror
    _serve_dailydialog(root, shared_data)
    dest = tmp_path / "dailydialog"
    dl.download("dailydialog", dest, base_url=base, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == sorted(dl.SHA256["dailydialog"])
    for name, digest in dl.SHA256["dailydialog"].items():
        assert _sha(dest / name) == digest
    assert read_dailydialog(dest).stats("test") == (1000, 7740)


def test_dailydialog_corrupted_member(
    mirror: tuple[Path, str], shared_data: Path, tmp_path: Path
) -> None:
    root, base = mirror
    _serve_dailydialog(root, shared_data, corrupt="dd_validation.zip")
    dest = tmp_path / "dailydialog"
    with pytest.raises(DataError, match=r"dd_validation.zip: sha256 mismatch: expected f068cf75"):
        dl.download("dailydialog", dest, base_url=base, progress=False)
    assert "dd_validation.zip" not in {p.name for p in dest.iterdir()}
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temporary files


def test_iemocap_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        dl.download("iemocap", tmp_path / "iemocap")
    msg = str(err.value)
    assert "https://sail.usc.edu/iemocap/" in msg and "iemocap_{train,dev,test}.csv" in msg
    assert "raw/cosmic_iemocap.pkl" in msg and "\n" not in msg
    with pytest.raises(DataError, match="unknown dataset 'friends'"):
        dl.download("friends", tmp_path)

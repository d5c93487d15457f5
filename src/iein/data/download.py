"""Download MELD and DailyDialog from their official sources, verified by pinned sha256.

Files are streamed to a temporary file next to the target and moved into place with
``os.replace`` only once their hash matches, so an interrupted or tampered download never
leaves a file that a reader would take for the real corpus.  ``base_url`` (or
``$IEIN_DOWNLOAD_BASE_URL``) swaps the scheme and host for a mirror that keeps the paths.
IEMOCAP is licensed and is never downloaded.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from ..errors import DataError
from ..utils import sha256_file
from . import dailydialog, iemocap, meld

ENV_BASE_URL = "IEIN_DOWNLOAD_BASE_URL"
MELD_URL = "https://raw.githubusercontent.com/declare-lab/MELD/master/data/MELD/{file}"
DAILYDIALOG_URL = "http://yanran.li/files/ijcnlp_dailydialog.zip"
#: Member of the DailyDialog release holding each split zip: dd_<split>.zip <- this.
DAILYDIALOG_MEMBERS: dict[str, str] = {
    f"dd_{rel}.zip": f"ijcnlp_dailydialog/{rel}.zip" for rel in ("train", "validation", "test")
}
#: Pinned sha256 of every file a download produces (from the project's verified copies).
SHA256: dict[str, dict[str, str]] = {
    "meld": {
        "train_sent_emo.csv": "d2fa2d6529cf03cac2989efec05c9b27d8fd2f4c8fc5974c7ae88aa537fa02db",
        "dev_sent_emo.csv": "2e89c6f8aa182d6f62f8c6331aece905ac7273ca4999660bfb5213e1d0370c1c",
        "test_sent_emo.csv": "8d37103938f7067600839fe29d5a114a6cd1bcdafb75bec101e06464c5006888",
    },
    "dailydialog": {
        "dd_train.zip": "6191257f8250da0e045bfd1d017645e15b2358df975ec4c5c431a5a1f99662a4",
        "dd_validation.zip": "f068cf7526a56ab5f26e99b74ce9edbc2766f7b060a3c6cef035920b0dd28153",
        "dd_test.zip": "5f9526a5ce4b8af4ca237aa3ff38cbf03becbc596c70b0974d7f5f9af2ea0615",
    },
}
assert set(SHA256["meld"]) == set(meld.FILES.values())
assert set(SHA256["dailydialog"]) == set(dailydialog.FILES.values()) == set(DAILYDIALOG_MEMBERS)

_CHUNK = 1 << 20
_TIMEOUT_S = 60


def mirror_url(url: str, base_url: str | None) -> str:
    """``url`` with its scheme and host replaced by ``base_url`` (its path is kept)."""
    if not base_url:
        return url
    return base_url.rstrip("/") + urllib.parse.urlsplit(url).path


@contextmanager
def _temp_file(dest: Path, name: str) -> Iterator[tuple[IO[bytes], Path]]:
    """A hidden temporary file in ``dest``, removed unless the caller moved it away."""
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
    path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, path
    finally:
        path.unlink(missing_ok=True)


def _copy(src: IO[bytes], dst: IO[bytes], label: str, total: int | None, progress: bool) -> str:
    """Copy a stream chunk by chunk, reporting progress; return the sha256 of the bytes."""
    digest, done = hashlib.sha256(), 0
    for chunk in iter(lambda: src.read(_CHUNK), b""):
        dst.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if progress:
            size = f" / {total / 1e6:.1f}" if total else ""
            print(f"\r  {label}: {done / 1e6:.1f}{size} MB", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return digest.hexdigest()


def _install(tmp: Path, got: str, target: Path, expected: str, origin: str) -> None:
    """Move a verified temporary file into place; on a hash mismatch delete it and fail."""
    if got != expected:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"{target}: sha256 mismatch: expected {expected}, got {got} (from {origin}); "
            "the downloaded file was deleted"
        )
    os.replace(tmp, target)


def _fetch(url: str, dst: IO[bytes], label: str, progress: bool) -> str:
    """Stream ``url`` into ``dst``; return the sha256 of what was received."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise DataError(f"{url}: unsupported URL scheme {scheme!r} (use http, https or file)")
    if progress:
        print(f"downloading {url}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            return _copy(response, dst, label, total, progress)
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: download failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"{url}: download failed: {getattr(e, 'reason', e)}") from None


def _present(target: Path, expected: str) -> bool:
    return target.is_file() and sha256_file(target) == expected


def _download_meld(dest: Path, base_url: str | None, progress: bool) -> None:
    for name, expected in SHA256["meld"].items():
        target = dest / name
        if _present(target, expected):
            continue
        url = mirror_url(MELD_URL.format(file=name), base_url)
        with _temp_file(dest, name) as (f, tmp):
            got = _fetch(url, f, name, progress)
            f.close()
            _install(tmp, got, target, expected, url)


def _download_dailydialog(dest: Path, base_url: str | None, progress: bool) -> None:
    wanted = {n: h for n, h in SHA256["dailydialog"].items() if not _present(dest / n, h)}
    if not wanted:
        return
    url = mirror_url(DAILYDIALOG_URL, base_url)
    with _temp_file(dest, "ijcnlp_dailydialog.zip") as (f, outer):
        _fetch(url, f, "ijcnlp_dailydialog.zip", progress)
        f.close()
        try:
            release = zipfile.ZipFile(outer)
        except zipfile.BadZipFile:
            raise DataError(
                f"{url}: not a zip archive (expected the DailyDialog release)"
            ) from None
        with release:
            members = set(release.namelist())
            for name, expected in wanted.items():
                member = DAILYDIALOG_MEMBERS[name]
                if member not in members:
                    raise DataError(f"{url}: the archive has no member {member!r}")
                with _temp_file(dest, name) as (out, tmp):
                    try:
                        with release.open(member) as src:
                            got = _copy(src, out, name, None, False)
                    except (zipfile.BadZipFile, OSError) as e:
                        raise DataError(f"{url}[{member}]: corrupted archive: {e}") from None
                    out.close()
                    _install(tmp, got, dest / name, expected, f"{url}[{member}]")


def download(
    name: str, dest: str | os.PathLike[str], base_url: str | None = None, progress: bool = True
) -> Path:
    """Download dataset ``name`` into the directory ``dest`` (the dataset folder itself).

    Files already present with the right hash are kept.  Returns ``dest``.  On failure the
    folders created for it are removed again if they are still empty.
    """
    dest = Path(dest).expanduser()
    if name == "iemocap":
        raise DataError(iemocap.licence_message(dest))
    if name not in SHA256:
        raise DataError(f"unknown dataset {name!r} (downloadable: {', '.join(SHA256)})")
    base_url = base_url or os.environ.get(ENV_BASE_URL) or None
    created = _make_folder(dest)
    try:
        if name == "meld":
            _download_meld(dest, base_url, progress)
        else:
            _download_dailydialog(dest, base_url, progress)
    except BaseException:  # also Ctrl-C: a failed first download leaves no empty folder behind
        _remove_empty(created)
        raise
    return dest


def _make_folder(dest: Path) -> list[Path]:
    """Create ``dest`` and its missing parents; return the folders created, deepest first."""
    created: list[Path] = []
    folder = dest
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dest}: cannot create the folder: {e.strerror or e}") from None
    return created


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders this download created, deepest first, while they are empty.

    ``rmdir`` removes only empty folders, so a file (a verified download, or anything put
    there meanwhile) and every folder that existed before are always kept."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return

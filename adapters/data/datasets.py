"""Interaction datasets: MovieLens-100K, MovieLens-1M, or any CSV/TSV file, as one time-ordered event stream.

``load_dataset("ml-100k")`` fetches the files on first use (see :mod:`adapters.data.fetch`), parses them with numpy
and returns a :class:`Dataset` whose events are sorted by ``(timestamp, original row index)`` — a stable sort,
which the prequential protocol relies on.

Examples
--------
>>> from adapters.data.datasets import load_dataset
>>> ds = load_dataset("ml-100k")                             # doctest: +SKIP
>>> len(ds), ds.n_users, ds.n_items                          # doctest: +SKIP
(100000, 943, 1682)
"""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from adapters.data.csvfile import read_events_csv
from adapters.errors import MetarecError
from adapters.data.fetch import SOURCES, ensure_files

log = logging.getLogger(__name__)

NAMES = tuple(SOURCES)

#: ML-1M age buckets (lower bounds); ML-100K ages are put into the same buckets. Code 0 = unknown.
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)
GENDERS = ("M", "F")
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)
_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class ItemFeatures:
    """Side features of the items that occur in the events (row i ↔ ``item_ids[i]``, numeric-id order)."""

    item_ids: list[str]
    genres: np.ndarray          # float32 [N, G] multi-hot
    genre_names: list[str]
    year: np.ndarray            # int64 [N], 0 = unknown
    titles: list[str]

    def __len__(self) -> int:
        return len(self.item_ids)

    def genre_rows(self, ids: list[str]) -> np.ndarray:
        """float32 ``[len(ids), G]`` multi-hot genres of ``ids`` (zeros for an id without features).

        >>> f = ItemFeatures(["1", "2"], np.eye(2, dtype=np.float32), ["a", "b"], np.zeros(2, np.int64), ["x", "y"])
        >>> f.genre_rows(["2", "9"]).tolist()
        [[0.0, 1.0], [0.0, 0.0]]
        """
        row = {iid: r for r, iid in enumerate(self.item_ids)}
        out = np.zeros((len(ids), self.genres.shape[1]), dtype=np.float32)
        found = [(n, row[i]) for n, i in enumerate(ids) if i in row]
        if found:
            at, src = zip(*found)
            out[list(at)] = self.genres[list(src)]
        return out


@dataclass
class UserFeatures:
    """Side features of the users that occur in the events, as small integer codes (0 = unknown)."""

    user_ids: list[str]
    age: np.ndarray             # int64 [N], code into AGE_BUCKETS (+1); 0 = unknown
    gender: np.ndarray          # int64 [N], 1 = M, 2 = F, 0 = unknown
    occupation: np.ndarray      # int64 [N], 1.. = occupation_names[code-1], 0 = unknown
    n_age: int
    n_gender: int
    n_occupation: int
    occupation_names: list[str]

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass
class Dataset:
    """A stream of interaction events sorted by timestamp (stable: ties keep file order).

    Attributes
    ----------
    name : str
        ``"ml-100k"``, ``"ml-1m"`` or the CSV file's name.
    fingerprint : str
        sha256 identifying the source data (pinned checksums of named datasets; the CSV file's bytes).
    user_ids, item_ids : np.ndarray
        dtype object (str), [E].
    ratings : np.ndarray
        float32 [E]; NaN = implicit event.
    timestamps : np.ndarray
        float64 [E], epoch seconds, non-decreasing.
    item_features, user_features : optional side features (named datasets only).
    """

    name: str
    fingerprint: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    item_features: ItemFeatures | None = None
    user_features: UserFeatures | None = None

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_users(self) -> int:
        """Number of distinct users."""
        return len(set(self.user_ids.tolist()))

    @property
    def n_items(self) -> int:
        """Number of distinct items."""
        return len(set(self.item_ids.tolist()))

    def slice(self, start: int | None = None, stop: int | None = None) -> Dataset:
        """The events ``[start:stop]`` (same name, fingerprint and side features)."""
        s = slice(start, stop)
        return replace(self, user_ids=self.user_ids[s], item_ids=self.item_ids[s],
                       ratings=self.ratings[s], timestamps=self.timestamps[s])

    def head(self, n: int) -> Dataset:
        """The first ``n`` events in time order."""
        return self.slice(0, n)

    def to_csv(self, path: str | Path) -> None:
        """Write the contract CSV form ``user_id,item_id,rating,timestamp`` (rating empty for implicit events)."""
        rating_txt = [("" if r != r else format(r, "g")) for r in self.ratings.tolist()]
        ts = self.timestamps
        if np.all(ts == np.floor(ts)):
            ts_txt = [str(t) for t in ts.astype(np.int64).tolist()]
        else:
            ts_txt = [repr(t) for t in ts.tolist()]
        for col, values in (("user_id", self.user_ids), ("item_id", self.item_ids)):
            if any(("," in v or '"' in v or "\n" in v) for v in values):
                raise MetarecError(f"cannot write {path}: a {col} contains a comma, quote or newline")
        lines = [f"{u},{i},{r},{t}\n" for u, i, r, t in zip(self.user_ids.tolist(), self.item_ids.tolist(),
                                                            rating_txt, ts_txt)]
        try:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write("user_id,item_id,rating,timestamp\n")
                f.writelines(lines)
        except OSError as exc:
            raise MetarecError(f"cannot write {path}: {exc}") from exc


# --------------------------------------------------------------------------------------------------- helpers
def _ids_as_str(codes: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer ids [E] → (object array of str [E], sorted distinct ids as str)."""
    uniq, inverse = np.unique(codes, return_inverse=True)
    names = [str(int(u)) for u in uniq]
    return np.array(names, dtype=object)[inverse], names


def _numeric_table(text: str, n_cols: int, what: str) -> np.ndarray:
    """Parse whitespace-separated integers/floats into an [R, n_cols] float64 array."""
    rows = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # raised when parsing stops early: checked below
        flat = np.fromstring(text, dtype=np.int64, sep=" ")   # MovieLens is all integers: 8x faster than float
        if flat.size != rows * n_cols:
            flat = np.fromstring(text, dtype=np.float64, sep=" ")
    flat = flat.astype(np.float64)
    if flat.size != rows * n_cols:
        raise MetarecError(f"{what}: expected {rows} rows of {n_cols} numbers, parsed {flat.size} numbers "
                           f"(corrupt file? delete it to fetch it again)")
    return flat.reshape(-1, n_cols)


def _events(name: str, fingerprint: str, table: np.ndarray) -> Dataset:
    """[R, 4] (user, item, rating, timestamp) in file order → Dataset sorted by (timestamp, row)."""
    order = np.argsort(table[:, 3], kind="stable")
    table = table[order]
    users, _ = _ids_as_str(table[:, 0].astype(np.int64))
    items, _ = _ids_as_str(table[:, 1].astype(np.int64))
    return Dataset(name=name, fingerprint=fingerprint, user_ids=users, item_ids=items,
                   ratings=table[:, 2].astype(np.float32), timestamps=table[:, 3].astype(np.float64))


def _age_code(age: int) -> int:
    if age <= 0:
        return 0
    return int(np.searchsorted(AGE_BUCKETS, age, side="right"))   # 1..7


def _restrict_items(ids: list[str], genres: np.ndarray, genre_names: list[str], year: list[int],
                    titles: list[str], present: np.ndarray) -> ItemFeatures:
    keep = set(present.tolist())
    rows = sorted((i for i, x in enumerate(ids) if x in keep), key=lambda i: int(ids[i]))
    return ItemFeatures(item_ids=[ids[i] for i in rows], genres=genres[rows].astype(np.float32),
                        genre_names=genre_names, year=np.array([year[i] for i in rows], dtype=np.int64),
                        titles=[titles[i] for i in rows])


def _restrict_users(ids: list[str], age: list[int], gender: list[int], occupation: list[int],
                    occupation_names: list[str], present: np.ndarray) -> UserFeatures:
    keep = set(present.tolist())
    rows = sorted((i for i, x in enumerate(ids) if x in keep), key=lambda i: int(ids[i]))
    return UserFeatures(user_ids=[ids[i] for i in rows], age=np.array([age[i] for i in rows], dtype=np.int64),
                        gender=np.array([gender[i] for i in rows], dtype=np.int64),
                        occupation=np.array([occupation[i] for i in rows], dtype=np.int64),
                        n_age=len(AGE_BUCKETS) + 1, n_gender=len(GENDERS) + 1,
                        n_occupation=len(occupation_names) + 1, occupation_names=occupation_names)


def _year_of(title: str, fallback: str = "") -> int:
    if fallback.isdigit():
        return int(fallback)
    m = _YEAR.search(title)
    return int(m.group(1)) if m else 0


# --------------------------------------------------------------------------------------------------- loaders
def _load_ml100k(directory: Path, fingerprint: str) -> Dataset:
    inter = (directory / "ml-100k.inter").read_text(encoding="utf-8")
    body = inter.split("\n", 1)[1]
    ds = _events("ml-100k", fingerprint, _numeric_table(body, 4, "ml-100k.inter"))

    ids, titles, years, genre_lists = [], [], [], []
    for line in (directory / "ml-100k.item").read_text(encoding="utf-8").splitlines()[1:]:
        iid, title, year, classes = line.split("\t")
        y = _year_of(title, year)
        title = "unknown" if title == "unkonwn" else title
        ids.append(iid)
        titles.append(title if _YEAR.search(title) or y == 0 else f"{title} ({y})")
        years.append(y)
        genre_lists.append(classes.split(" ") if classes else [])
    genre_names = sorted({g for gl in genre_lists for g in gl})
    genres = np.zeros((len(ids), len(genre_names)), dtype=np.float32)
    col = {g: j for j, g in enumerate(genre_names)}
    for r, gl in enumerate(genre_lists):
        genres[r, [col[g] for g in gl]] = 1.0
    ds.item_features = _restrict_items(ids, genres, genre_names, years, titles, ds.item_ids)

    occ_names: list[str] = []
    uids, ages, genders, occs_raw = [], [], [], []
    for line in (directory / "ml-100k.user").read_text(encoding="utf-8").splitlines()[1:]:
        uid, age, gender, occ, _zip = line.split("\t")
        uids.append(uid)
        ages.append(_age_code(int(age)) if age.isdigit() else 0)
        genders.append(GENDERS.index(gender) + 1 if gender in GENDERS else 0)
        occs_raw.append(occ)
    occ_names = sorted(set(occs_raw))
    occs = [occ_names.index(o) + 1 for o in occs_raw]
    ds.user_features = _restrict_users(uids, ages, genders, occs, occ_names, ds.user_ids)
    return ds


def _load_ml1m(directory: Path, fingerprint: str) -> Dataset:
    ratings = (directory / "ratings.dat").read_bytes().replace(b"::", b" ").decode("ascii")
    ds = _events("ml-1m", fingerprint, _numeric_table(ratings, 4, "ratings.dat"))

    ids, titles, years, genre_lists = [], [], [], []
    for line in (directory / "movies.dat").read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        iid, title, classes = line.split("::")
        ids.append(iid)
        titles.append(title)
        years.append(_year_of(title))
        genre_lists.append(classes.split("|") if classes else [])
    genre_names = sorted({g for gl in genre_lists for g in gl})
    col = {g: j for j, g in enumerate(genre_names)}
    genres = np.zeros((len(ids), len(genre_names)), dtype=np.float32)
    for r, gl in enumerate(genre_lists):
        genres[r, [col[g] for g in gl]] = 1.0
    ds.item_features = _restrict_items(ids, genres, genre_names, years, titles, ds.item_ids)

    uids, ages, genders, occs = [], [], [], []
    for line in (directory / "users.dat").read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        uid, gender, age, occ, _zip = line.split("::")
        uids.append(uid)
        ages.append(_age_code(int(age)))
        genders.append(GENDERS.index(gender) + 1 if gender in GENDERS else 0)
        occs.append(int(occ) + 1)
    ds.user_features = _restrict_users(uids, ages, genders, occs, list(ML1M_OCCUPATIONS), ds.user_ids)
    return ds


_LOADERS = {"ml-100k": _load_ml100k, "ml-1m": _load_ml1m}


def load_dataset(spec: str, data_dir: str | Path | None = None, progress: bool = False) -> Dataset:
    """Load a named dataset (fetched and checksummed on first use) or a CSV/TSV file.

    Parameters
    ----------
    spec : str
        ``"ml-100k"``, ``"ml-1m"``, or a path to a CSV/TSV file whose header names
        ``user_id,item_id,rating,timestamp`` (other columns ignored; empty rating = implicit event).
    data_dir : str or Path, optional
        Cache of the named datasets; default ``$METAREC_DATA_DIR`` or ``~/.cache/metarec``.
    progress : bool
        Show a spinner while downloading.

    Returns
    -------
    Dataset
        Events sorted by ``(timestamp, original row index)``.

    Raises
    ------
    MetarecError
        Unknown name, download failure, checksum mismatch, or a missing/malformed file (one line).
    """
    key = spec.strip().lower()
    if key in _LOADERS:
        directory = ensure_files(key, data_dir, progress=progress)
        ds = _LOADERS[key](directory, SOURCES[key].fingerprint)
        log.info("loaded %s: %d events, %d users, %d items", key, len(ds), ds.n_users, ds.n_items)
        return ds
    path = Path(spec).expanduser()
    looks_like_path = any(sep in spec for sep in ("/", "\\")) or path.suffix.lower() in (".csv", ".tsv", ".txt")
    if not looks_like_path and not path.exists():
        raise MetarecError(f"unknown dataset {spec!r}: use one of {', '.join(NAMES)}, or a path to a CSV/TSV file")
    users, items, ratings, timestamps, fingerprint = read_events_csv(path)
    order = np.argsort(timestamps, kind="stable")
    return Dataset(name=path.name, fingerprint=fingerprint, user_ids=users[order], item_ids=items[order],
                   ratings=ratings[order], timestamps=timestamps[order])

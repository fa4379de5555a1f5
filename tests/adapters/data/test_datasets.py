"""Datasets: the real MovieLens files (fetched once into the cache) and the CSV/TSV path with its errors."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from adapters.data.datasets import Dataset, load_dataset
from adapters.errors import MetarecError
from adapters.data.fetch import MARKER, SOURCES, ensure_files

@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    return load_dataset("ml-100k")          # default cache: downloads once per machine/CI run


# ------------------------------------------------------------------------------------------------ ML-100K
def test_ml100k_counts(ml100k: Dataset) -> None:
    assert len(ml100k) == 100_000
    assert ml100k.n_users == 943
    assert ml100k.n_items == 1682
    assert ml100k.user_ids.dtype == object and isinstance(ml100k.user_ids[0], str)
    assert ml100k.ratings.dtype == np.float32 and ml100k.timestamps.dtype == np.float64
    assert set(np.unique(ml100k.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_ml100k_order_is_stable_sort_of_the_file(ml100k: Dataset) -> None:
    """Events are exactly the source file sorted by (timestamp, row index)."""
    directory = ensure_files("ml-100k")
    rows = [ln.split("\t") for ln in (directory / "ml-100k.inter").read_text().splitlines()[1:]]
    keyed = sorted(range(len(rows)), key=lambda r: (float(rows[r][3]), r))
    assert ml100k.user_ids.tolist() == [rows[r][0] for r in keyed]
    assert ml100k.item_ids.tolist() == [rows[r][1] for r in keyed]
    assert ml100k.ratings.tolist() == [float(rows[r][2]) for r in keyed]
    assert np.all(np.diff(ml100k.timestamps) >= 0)
    # the very first line of u.data is user 196 / item 242 at 881250949; it must sit among its timestamp's ties
    at = np.flatnonzero(ml100k.timestamps == 881250949.0)
    assert ("196", "242") in list(zip(ml100k.user_ids[at], ml100k.item_ids[at]))


def test_ml100k_side_features(ml100k: Dataset) -> None:
    items, users = ml100k.item_features, ml100k.user_features
    assert items is not None and users is not None
    assert len(items) == 1682 and items.genres.shape == (1682, 19) and items.genres.dtype == np.float32
    assert len(items.genre_names) == 19 and "Film-Noir" in items.genre_names
    assert set(items.item_ids) == set(ml100k.item_ids.tolist())
    toy = items.item_ids.index("1")
    assert items.titles[toy] == "Toy Story (1995)" and items.year[toy] == 1995
    assert {items.genre_names[j] for j in np.flatnonzero(items.genres[toy])} == {"Animation", "Children's", "Comedy"}
    assert items.year.shape == (1682,) and (items.year == 0).sum() >= 1          # item 267 has no date
    assert len(users) == 943 and set(users.user_ids) == set(ml100k.user_ids.tolist())
    for codes, n in ((users.age, users.n_age), (users.gender, users.n_gender), (users.occupation, users.n_occupation)):
        assert codes.shape == (943,) and codes.min() >= 1 and codes.max() < n
    assert users.n_occupation == 22 and users.n_gender == 3
    u1 = users.user_ids.index("1")            # 24, M, technician
    assert users.gender[u1] == 1 and users.occupation_names[users.occupation[u1] - 1] == "technician"


def test_ml100k_csv_round_trip(ml100k: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "ml100k.csv"
    ml100k.to_csv(out)
    back = load_dataset(str(out))
    assert back.fingerprint == hashlib.sha256(out.read_bytes()).hexdigest()
    assert back.user_ids.tolist() == ml100k.user_ids.tolist()
    assert back.item_ids.tolist() == ml100k.item_ids.tolist()
    assert np.array_equal(back.ratings, ml100k.ratings) and np.array_equal(back.timestamps, ml100k.timestamps)
    assert out.read_text().splitlines()[0] == "user_id,item_id,rating,timestamp"


def test_head_and_slice(ml100k: Dataset) -> None:
    head = ml100k.head(10)
    assert len(head) == 10 and head.user_ids.tolist() == ml100k.user_ids[:10].tolist()
    assert len(ml100k.slice(50_000)) == 50_000


def test_cache_marker_and_tampering(tmp_path: Path) -> None:
    """Files placed by hand are accepted when their checksums match; a changed file is refused."""
    src = ensure_files("ml-100k")
    dst = tmp_path / "ml-100k"
    dst.mkdir()
    for local, _ in SOURCES["ml-100k"].members.values():
        (dst / local).write_bytes((src / local).read_bytes())
    assert len(load_dataset("ml-100k", data_dir=tmp_path)) == 100_000
    assert json.loads((dst / MARKER).read_text())["ml-100k.inter"]["sha256"].startswith("4edb74e2")
    with open(dst / "ml-100k.user", "a") as f:
        f.write("944\t30\tM\twriter\t00000\n")
    with pytest.raises(MetarecError, match="checksum mismatch"):
        load_dataset("ml-100k", data_dir=tmp_path)


@pytest.mark.slow
def test_ml1m_counts() -> None:
    ds = load_dataset("ml-1m")
    assert (len(ds), ds.n_users, ds.n_items) == (1_000_209, 6040, 3706)
    assert np.all(np.diff(ds.timestamps) >= 0)
    assert ds.item_features is not None and ds.item_features.genres.shape == (3706, 18)
    assert ds.user_features is not None and len(ds.user_features) == 6040
    assert ds.user_features.n_age == 8 and ds.user_features.n_occupation == 22


def test_unknown_name() -> None:
    with pytest.raises(MetarecError, match="ml-100k, ml-1m") as exc:
        load_dataset("ml-20m")
    assert "\n" not in str(exc.value)


def test_pip_failure_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an unreachable index pip fails; the user gets one line, no traceback."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    with pytest.raises(MetarecError, match="could not download recbole==1.2.1") as exc:
        load_dataset("ml-100k", data_dir=tmp_path / "cache")
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------------------------------ CSV / TSV
def _write(tmp_path: Path, text: str, name: str = "events.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_happy_path_sorts_stably_and_keeps_implicit(tmp_path: Path) -> None:
    path = _write(tmp_path, "timestamp,extra,user_id,item_id,rating\n"
                            "20,x,u1,a,4\n10,y,u2,b,\n20,z,u3,c,2.5\n5,w,u1,d,1\n")
    ds = load_dataset(str(path))
    assert ds.name == "events.csv" and ds.item_features is None and ds.user_features is None
    assert ds.user_ids.tolist() == ["u1", "u2", "u1", "u3"]
    assert ds.item_ids.tolist() == ["d", "b", "a", "c"]          # ties at 20 keep file order (a before c)
    assert ds.timestamps.tolist() == [5.0, 10.0, 20.0, 20.0]
    assert np.isnan(ds.ratings[1]) and ds.ratings[3] == np.float32(2.5)
    out = tmp_path / "out.csv"
    ds.to_csv(out)
    assert out.read_text().splitlines()[2] == "u2,b,,10"


def test_tsv_is_sniffed(tmp_path: Path) -> None:
    path = _write(tmp_path, "user_id\titem_id\trating\ttimestamp\n7\t42\t\t1.5\n7\t43\t3\t1\n", "e.tsv")
    ds = load_dataset(str(path))
    assert ds.item_ids.tolist() == ["43", "42"] and np.isnan(ds.ratings[1]) and ds.timestamps[1] == 1.5


@pytest.mark.parametrize(("text", "pattern"), [
    ("user_id,item_id,timestamp\n1,2,3\n", r"lacks column\(s\) rating"),
    ("user,item,rating,timestamp\n1,2,3,4\n", r"lacks column\(s\) user_id, item_id"),
    ("user_id,item_id,rating,timestamp\n1,2,3,4\n1,2,good,5\n", r"line 3: rating 'good' is not a number"),
    ("user_id,item_id,rating,timestamp\n1,2,3,yesterday\n", r"line 2: timestamp 'yesterday' is not a number"),
    ("user_id,item_id,rating,timestamp\n1,2,3,4\n1,2\n", r"line 3: expected at least 4 fields"),
    ("user_id,item_id,rating,timestamp\n,2,3,4\n", r"line 2: empty user_id"),
    ("user_id,item_id,rating,timestamp\n1,2,nan,4\n", r"line 2: rating 'nan' is not a finite number"),
    ("user_id,item_id,rating,timestamp\n", r"no events"),
    ("", r"empty file"),
])
def test_malformed_csv_is_one_line_error(tmp_path: Path, text: str, pattern: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(MetarecError, match=pattern) as exc:
        load_dataset(str(path))
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_missing_unreadable_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(MetarecError, match="no such file"):
        load_dataset(str(tmp_path / "nope.csv"))
    with pytest.raises(MetarecError, match="cannot read"):
        load_dataset(str(tmp_path))                           # a directory
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"user_id,item_id,rating,timestamp\n1,2,3,4\n\xff\xfe,1,1,1\n")
    with pytest.raises(MetarecError, match="line 3: not UTF-8"):
        load_dataset(str(binary))


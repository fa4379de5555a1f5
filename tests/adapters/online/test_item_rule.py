"""The learner's side of the item rule (adapters/online/items/rule.py): what a micro-batch teaches about items."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adapters.online.items.config import ItemConfig
from adapters.online.items.contributions import DELTA, INIT, Contributions
from adapters.online.items.rule import BatchItems, contribute
from adapters.online.items.table import ItemTable
from adapters.online.items.tablerows import ArrayRows

D, R = 3, 2  # ranking and rating dimensions
LAYOUT = {"item_emb": 0, "item_bias": D, "item_rate": D + 1}
WIDTH = D + 1 + R
IDS = ["<unk>", "a", "b", "c", "d", "e", "f"]


def _table(published: bool = True, **config: object) -> ItemTable:
    """A learner's table over IDS with random rows, every row published in version "v" unless told otherwise."""
    rows = ArrayRows(capacity=len(IDS), width=WIDTH)
    rows.data[:] = np.random.default_rng(1).normal(size=(len(IDS), WIDTH)).astype(np.float32)
    cfg = {"embed_lr": 0.1, "factor_lr": 0.05, "bias_lr": 0.0, "negatives": 0, "half_life_s": 100.0, **config}
    t = ItemTable(IDS, ItemConfig(**cfg), rows)  # type: ignore[arg-type]
    if published:
        t.space[:] = "v"
    return t


def _batch(rows: list[int], windows: list[list[int]] | None = None, errors: list[float] | None = None,
           seed: int = 0) -> BatchItems:
    n = len(rows)
    g = torch.Generator().manual_seed(seed)
    return BatchItems(np.asarray(rows, np.int64), windows if windows is not None else [[] for _ in rows],
                      100.0 + np.arange(n, dtype=np.float64), torch.randn(n, D, generator=g),
                      torch.randn(n, R, generator=g),
                      np.asarray(errors if errors is not None else [math.nan] * n, np.float64))


def _one(b: BatchItems, n: int) -> BatchItems:
    """Event ``n`` of ``b`` alone."""
    return BatchItems(b.rows[n:n + 1], [b.windows[n]], b.times[n:n + 1], b.vectors[n:n + 1],
                      b.rating_vectors[n:n + 1], b.errors[n:n + 1])


def _per_item(c: Contributions) -> dict[str, dict]:
    assert len(set(c.items)) == len(c.items), "one entry per item"
    out = {i: {"events": c.events[k], "rated": c.rated[k], "d_rating": c.d_rating[k], "tables": c.tables[k],
               "t": c.t[k], "kind": int(c.kind[k]), "links": {}} for k, i in enumerate(c.items)}
    for i, j, n in c.links():
        out[i]["links"][j] = out[i]["links"].get(j, 0.0) + n
    return out


def _summed(parts: list[Contributions]) -> dict[str, dict]:
    total: dict[str, dict] = {}
    for c in parts:
        for i, e in _per_item(c).items():
            s = total.setdefault(i, {"events": 0.0, "rated": 0.0, "d_rating": 0.0, "tables": np.zeros(WIDTH),
                                     "t": -math.inf, "links": {}})
            for key in ("events", "rated", "d_rating", "tables"):
                s[key] = s[key] + e[key]
            s["t"] = max(s["t"], e["t"])
            for j, n in e["links"].items():
                s["links"][j] = s["links"].get(j, 0.0) + n
    return total


@pytest.mark.parametrize("negatives", [0, 3])
def test_an_event_learns_the_same_alone_or_in_a_batch(negatives: int) -> None:
    """The rule's promise: neither the negatives nor an event's step depend on who else is in the batch."""
    t = _table(negatives=negatives, bias_lr=0.01)
    t.merge(Contributions.of(["b", "e"], "v", t=[90.0, 90.0], events=[30, 5]))  # popularity to sample by
    b = _batch([1, 2, 1, 3, 6], windows=[[], [1], [1, 2], [4, 5], [3]], errors=[0.5, 0.3, -1.0, 2.0, 0.25])
    together = _per_item(contribute(t, "v", b, seed=7, layout=LAYOUT))
    alone = _summed([contribute(t, "v", _one(b, n), seed=7, layout=LAYOUT) for n in range(len(b.rows))])
    assert set(together) == set(alone) and {"a", "b", "c", "f"} <= set(together)
    for item, e in together.items():
        s = alone[item]
        assert e["kind"] == DELTA
        assert (e["events"], e["rated"], e["t"], e["links"]) == (s["events"], s["rated"], s["t"], s["links"]), item
        assert e["d_rating"] == pytest.approx(s["d_rating"], abs=1e-12), item
        np.testing.assert_allclose(e["tables"], s["tables"], rtol=1e-5, atol=1e-7, err_msg=item)
    assert together["a"]["events"] == 2 and together["a"]["rated"] == 2 and together["a"]["t"] == 102.0
    assert together["a"]["tables"][:D].any() and together["a"]["tables"][D + 1:].any()  # steps there to compare
    assert together["a"]["d_rating"] != 0.0


def test_negatives_are_drawn_once_per_batch_by_popularity_reproducibly() -> None:
    t = _table(negatives=3)
    t.merge(Contributions.of(["b"], "v", t=[100.0], events=[10_000]))  # b: (10⁴+1)^0.75 = 1000 × a cold item
    b = _batch([1])
    first = contribute(t, "v", b, seed=5, layout=LAYOUT)
    assert contribute(t, "v", b, seed=5, layout=LAYOUT) == first  # the same seed: the same negatives and steps
    drawn = [set(contribute(t, "v", b, seed=s, layout=LAYOUT).items) - {"a"} for s in range(30)]
    assert all("b" in d for d in drawn)  # the popular item is in (almost) every draw
    cold = sum(len(d - {"b"}) for d in drawn)
    assert cold <= 6  # a cold item: ≈ 3/1005 per draw, five of them, thirty draws: ≈ 0.45 expected
    even = _table(negatives=3)  # no popularity: every item alike, another seed another draw
    drawn = [frozenset(contribute(even, "v", b, seed=s, layout=LAYOUT).items) - {"a"} for s in range(30)]
    assert len(set(drawn)) > 5 and set().union(*drawn) == {"b", "c", "d", "e", "f"}
    assert all(len(d) <= 3 for d in drawn)
    negative = _per_item(first)["b"]
    assert negative["events"] == 0 and negative["t"] == -math.inf and negative["tables"][:D + 1].any()


def test_with_negatives_0_the_step_is_the_full_catalogue_softmax_gradient() -> None:
    t = _table(negatives=0, factor_lr=0.0, bias_lr=0.0)
    b = _batch([2, 5, 2])
    got = _per_item(contribute(t, "v", b, seed=0, layout=LAYOUT))
    rows = t.rows.data.astype(np.float64)
    emb, bias = rows[:, :D], rows[:, D]
    expected = np.zeros((len(IDS), D + 1))
    for n, i in enumerate(b.rows.tolist()):
        u = b.vectors[n].numpy().astype(np.float64)
        logits = emb[1:] @ u + bias[1:]  # every item of the catalogue, row 0 (unknown) excluded
        p = np.exp(logits - logits.max())
        p /= p.sum()
        g = p.copy()
        g[i - 1] -= 1.0  # ∂(−log p_i)/∂logit_j
        expected[1:, :D] += -0.1 * g[:, None] * u[None, :]
        expected[1:, D] += -0.1 * g
    assert set(got) == set(IDS[1:])
    for r, item in enumerate(IDS[1:], start=1):
        np.testing.assert_allclose(got[item]["tables"][:D + 1], expected[r], rtol=1e-4, atol=1e-6, err_msg=item)
        assert not got[item]["tables"][D + 1:].any()  # no rating: no factor step


def test_the_rating_steps_are_sgd_on_the_pre_update_errors() -> None:
    t = _table(negatives=0, embed_lr=0.0, factor_lr=0.05, bias_lr=0.01)
    b = _batch([1, 1, 2], errors=[0.5, -1.0, math.nan])
    got = _per_item(contribute(t, "v", b, seed=0, layout=LAYOUT))
    v = b.rating_vectors.numpy()
    np.testing.assert_allclose(got["a"]["tables"][D + 1:], -0.05 * (0.5 * v[0] - 1.0 * v[1]), rtol=1e-5)
    assert not got["a"]["tables"][:D + 1].any() and not got["b"]["tables"].any()  # unrated: no factor step
    assert got["a"]["d_rating"] == pytest.approx(0.01 * 0.5) and got["b"]["d_rating"] == 0.0
    assert (got["a"]["rated"], got["b"]["rated"], got["b"]["events"]) == (2.0, 0.0, 1.0)
    assert set(got) == {"a", "b"}  # embed_lr 0: no ranking step, no negatives


def test_a_bias_prior_makes_the_correction_a_shrunk_running_mean_that_settles_to_the_rate() -> None:
    t = _table(negatives=0, embed_lr=0.0, factor_lr=0.0, bias_lr=0.001, bias_prior=4.0)
    a = t.row("a")
    residuals = [1.0, 0.5, 2.0, -0.5]
    for res in residuals:  # the error of the current prediction: it already includes the correction so far
        t.merge(contribute(t, "v", _batch([a], errors=[t.rating_delta[a] - res]), seed=0, layout=LAYOUT))
    assert t.rating_delta[a] == pytest.approx(sum(residuals) / (len(residuals) + 4.0), rel=1e-5)
    assert t.rated[a] == 4.0 and t.rating_delta[t.row("b")] == 0.0
    t.rated[a] = 1e6  # a well-rated item: the constant rate
    c = contribute(t, "v", _batch([a], errors=[-1.0]), seed=0, layout=LAYOUT)
    assert _per_item(c)["a"]["d_rating"] == pytest.approx(0.001)
    plain = _table(negatives=0, embed_lr=0.0, factor_lr=0.0, bias_lr=0.01)  # prior 0: the constant rate, summed
    c = contribute(plain, "v", _batch([a, a], errors=[-1.0, -1.0]), seed=0, layout=LAYOUT)
    assert _per_item(c)["a"]["d_rating"] == pytest.approx(0.02)
    reg = _table(negatives=0, embed_lr=0.0, factor_lr=0.0, bias_lr=0.1, bias_reg=0.5)
    reg.rating_delta[a] = 1.0  # pulled toward 0 for each rated event
    c = contribute(reg, "v", _batch([a], errors=[0.0]), seed=0, layout=LAYOUT)
    assert _per_item(c)["a"]["d_rating"] == pytest.approx(-0.05)
    off = _table(negatives=0, bias_lr=0.0)
    assert not contribute(off, "v", _batch([a], errors=[-1.0]), seed=0, layout=LAYOUT).d_rating.any()


def test_each_event_links_its_item_to_its_user_s_last_items() -> None:
    t = _table(embed_lr=0.0, cooc_window=2)
    b = _batch([1, 1, 2, 3], windows=[[2, 3, 4], [4], [0, 2, 1], []])
    got = _per_item(contribute(t, "v", b, seed=0, layout=LAYOUT))
    assert got["a"]["links"] == {"c": 1.0, "d": 2.0}  # b is beyond the window of two
    assert got["b"]["links"] == {"a": 1.0}  # itself and the unknown item are no neighbours
    assert got["c"]["links"] == {}


def test_unpublished_items_send_rows_to_set_the_published_send_steps() -> None:
    t = _table(negatives=0, embed_lr=0.1)
    t.space[t.row("b")] = ""  # not published yet
    t.space[t.row("c")] = "v0"  # published in another version only
    c = contribute(t, "v", _batch([1, 2, 3]), seed=0, layout=LAYOUT)
    got = _per_item(c)
    assert c.space == "v"
    assert {i: e["kind"] for i, e in got.items()} == {"a": DELTA, "b": INIT, "c": INIT, "d": DELTA, "e": DELTA,
                                                      "f": DELTA}
    step = _per_item(contribute(_table(negatives=0, embed_lr=0.1), "v", _batch([1, 2, 3]), seed=0, layout=LAYOUT))
    for item in ("b", "c"):  # the rows to set: its current rows plus this batch's step
        np.testing.assert_allclose(got[item]["tables"], t.rows.get(np.array([t.row(item)]))[0] + step[item]["tables"],
                                   rtol=1e-6)
    np.testing.assert_allclose(got["a"]["tables"], step["a"]["tables"], rtol=1e-6)


def test_young_online_items_follow_their_co_occurring_items() -> None:
    t = _table(embed_lr=0.1, young_events=3)
    x = t.add("x")  # created online: young
    t.space[x] = "v"
    t.merge(Contributions.of(["b"], "v", links=[(0, "x", 1.0)]))  # x met b once before
    got = _per_item(contribute(t, "v", _batch([x], windows=[[1]]), seed=0, layout=LAYOUT))
    assert got["x"]["kind"] == INIT and got["x"]["links"] == {"a": 1.0}
    # co-occurring with a (this batch) and b (before), once each: the mean of their rows
    np.testing.assert_allclose(got["x"]["tables"], t.rows.get(np.array([1, 2])).mean(0), rtol=1e-6)
    alone = _table(embed_lr=0.1, young_events=3)
    y = alone.add("y")
    got = _per_item(contribute(alone, "v", _batch([y]), seed=0, layout=LAYOUT))
    assert got["y"]["kind"] == INIT and got["y"]["tables"][:D].any()  # no neighbour yet: its row plus its step
    t.total[x] = 3  # no longer young: it learns as any other item
    assert _per_item(contribute(t, "v", _batch([x], windows=[[1]]), seed=0, layout=LAYOUT))["x"]["kind"] == DELTA


def test_a_batch_of_unrated_events_has_no_rating_bias_step() -> None:
    t = _table(bias_lr=0.01)
    c = contribute(t, "v", _batch([1, 2]), seed=0, layout=LAYOUT)  # implicit events only: no rating
    assert not c.d_rating.any() and c.events.sum() == 2


def test_a_batch_without_known_items_or_without_tables() -> None:
    t = _table()
    assert len(contribute(t, "v", _batch([0, 0]), seed=0, layout=LAYOUT)) == 0
    stats = ItemTable(IDS, ItemConfig(bias_lr=0.1))  # melu: no table rows, statistics only
    c = contribute(stats, "v", _batch([1, 2], windows=[[], [1]], errors=[-1.0, math.nan]), seed=0, layout=None)
    got = _per_item(c)
    assert c.width == 0 and set(got) == {"a", "b"} and got["a"]["d_rating"] == pytest.approx(0.1)
    assert got["b"]["links"] == {"a": 1.0} and got["b"]["events"] == 1.0 and got["b"]["t"] == 101.0

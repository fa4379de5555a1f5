"""Item rating-bias corrections with a count prior: a shrunk running mean of the residuals, then a constant rate."""
from __future__ import annotations

import numpy as np
import pytest

from adapters.errors import MetarecError
from adapters.online.freshness import FreshnessConfig, ItemFreshness


def test_prior_makes_the_correction_a_shrunk_running_mean():
    f = ItemFreshness(n_items=3, rating_lr=0.001, rating_prior=4.0)
    residuals = [1.0, 0.5, 2.0, -0.5]
    for r in residuals:   # the error of the current prediction: it already includes the correction so far
        f.observe(np.array([1]), np.array([-(r - f.rating_delta[1])]))
    assert f.rating_delta[1] == pytest.approx(sum(residuals) / (len(residuals) + 4.0), rel=1e-5)
    assert f.rating_delta[2] == 0.0 and f.rated_seen.tolist() == [0.0, 4.0, 0.0]


def test_rate_settles_to_the_constant_rate_and_zero_prior_is_the_old_rule():
    f = ItemFreshness(n_items=2, rating_lr=0.01, rating_prior=1.0)
    f.rated_seen[1] = 1e6
    f.observe(np.array([1]), np.array([-1.0]))
    assert f.rating_delta[1] == pytest.approx(0.01)
    old = ItemFreshness(n_items=2, rating_lr=0.01)
    old.observe(np.array([1, 1]), np.array([-1.0, -1.0]))
    assert old.rating_delta[1] == pytest.approx(0.02)


def test_prior_round_trips_through_the_config_and_must_not_be_negative():
    cfg = FreshnessConfig.from_dict({"rating_lr": 0.01, "rating_prior": 5})
    assert cfg.rating_prior == 5.0 and FreshnessConfig.from_dict(cfg.to_dict()) == cfg
    assert FreshnessConfig.from_dict({}).rating_prior == 0.0   # checkpoints written before the option
    with pytest.raises(MetarecError):
        FreshnessConfig(rating_prior=-1.0)

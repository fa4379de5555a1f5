"""One class per meta-learner, each owning what it learns, chosen from its command-line name."""
from __future__ import annotations

import pytest

from adapters.errors import MetarecError
from adapters.meta.learners import ALL_META, META_LEARNERS, MetaLearner, build_meta_learner
from adapters.meta.rates import PriorPrecision
from adapters.models import FeatureTables, build_model

LEARNED = {"maml": set(), "fomaml": set(), "reptile": set(), "erm": set(), "metasgd": {"rates.log_lr"},
           "mamlpp": {"rates.log_lr_steps"}}


def _mf(**inner):
    return build_model("mf", 8, FeatureTables.empty(8), {"dim": 4, "rating_dim": 2}, inner)


def test_the_registry_has_one_class_per_command_line_name():
    assert set(META_LEARNERS) == set(ALL_META) == set(LEARNED)
    assert all(issubclass(c, MetaLearner) and c.name == n for n, c in META_LEARNERS.items())
    with pytest.raises(MetarecError, match="unknown meta-learner 'anil'"):
        build_meta_learner("anil", _mf())


@pytest.mark.parametrize("name", ALL_META)
def test_each_meta_learner_owns_what_it_learns_and_the_model_adapts_with_it(name):
    m = _mf()
    learner = build_meta_learner(name, m)
    assert {n for n, p in learner.named_parameters() if p.requires_grad} == LEARNED[name]
    assert m.adaptation.rates is learner.rates and m.adaptation.prior is None
    assert not set(dict(learner.named_parameters())) & set(dict(m.named_parameters()))


@pytest.mark.parametrize("name", sorted(set(ALL_META) - {"metasgd"}))
def test_with_the_bayes_task_learner_the_meta_learner_owns_the_prior_precision(name):
    m = _mf(task_learner="bayes", rating_solver="ridge")
    learner = build_meta_learner(name, m)
    assert isinstance(learner.prior, PriorPrecision) and learner.prior.log_prior_prec.requires_grad
    assert m.adaptation.prior is learner.prior


def test_metasgd_with_the_bayes_task_learner_is_refused():
    with pytest.raises(MetarecError, match="^metasgd learns per-parameter inner rates; .* use maml$"):
        build_meta_learner("metasgd", _mf(task_learner="bayes", rating_solver="ridge"))

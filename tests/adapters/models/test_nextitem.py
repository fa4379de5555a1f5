"""seq's next-item support task: each target is ranked with the context of exactly the events before it."""
from __future__ import annotations

import pytest
import torch

from adapters.base import SupportBatch
from adapters.errors import MetarecError
from adapters.meta import bayes
from adapters.models import FeatureTables, build_model

CFG = {"dim": 8, "rating_dim": 4, "support": "next", "next_positions": 3, "attention": "content"}
SB = SupportBatch.from_lists([[1, 2, 3, 0, 5], [4, 6], [], [7]],
                             [[5, 3, float("nan"), 2, 4], [2, 4], [], [float("nan")]], users=[1, 2, 0, 3])


def _model(**over):
    m = build_model("seq", 12, FeatureTables.empty(12, n_users=6), {**CFG, **over})
    with torch.no_grad():
        if m.config.attention == "content":
            m.beta.fill_(0.8)
        m.ctx_emb.add_(torch.randn(m.ctx_emb.shape, generator=torch.Generator().manual_seed(0)))
    return m


def test_each_target_is_ranked_with_the_context_of_its_prefix():
    m = _model()
    task = m.next_task(SB)
    for b, items in enumerate([[1, 2, 3, 0, 5], [4, 6], [], [7]]):
        n = len(items)
        for t in range(3):
            l = n - 3 + t
            if l < 0 or items[l] == 0:
                assert task.targets[b, t] == 0 and task.weights[b, t] == 0
                continue
            assert task.targets[b, t] == items[l]
            prefix = SupportBatch.from_lists([items[:l]], [[4.0] * l], users=[0])
            expected = m.context(prefix)[0] if l else torch.zeros(8)
            torch.testing.assert_close(task.contexts[b, t], expected)
    # recency weights: the newest target weighs most, each user's sum to 1 (none for the empty window)
    assert task.weights[0, 2] > task.weights[0, 0] > 0 and task.weights[0, 1] == 0  # window position 3: item 0
    torch.testing.assert_close(task.weights.sum(1), torch.tensor([1.0, 1.0, 0.0, 1.0]))


def test_content_attention_with_beta_zero_is_the_age_attention():
    content, age = _model(), _model(attention="age")
    age.load_state_dict({k: v for k, v in content.state_dict().items() if k != "beta"})
    with torch.no_grad():
        content.beta.zero_()
    torch.testing.assert_close(content.attention(SB), age.attention(SB))
    with torch.no_grad():
        content.beta.fill_(2.0)
    assert not torch.allclose(content.attention(SB), age.attention(SB))


def test_the_support_loss_is_the_next_item_task_and_the_query_loss_is_unchanged():
    m, window = _model(), _model(support="window")
    window.load_state_dict(m.state_dict())
    s = m.prepare_states(m.init_states(SB.users), SB).detach()
    torch.testing.assert_close(m.batch_loss(s, SB), window.batch_loss(s, SB))
    assert not torch.allclose(m.support_loss(s, SB)[:2], window.support_loss(s, SB)[:2])


def test_bayes_refuses_the_next_item_task():
    m = _model()
    with pytest.raises(MetarecError, match="task-learner gradient"):
        bayes.adapt(m, bayes.init_states(m, SB.users), SB)


def test_unknown_settings_are_refused():
    with pytest.raises(MetarecError, match="support task"):
        _model(support="sideways")
    with pytest.raises(MetarecError, match="attention"):
        _model(attention="psychic")

"""Variants of the bayes task learner's serving update and ranking, on one θ0, metarec only (1-second micro-batches).

    metarec train --dataset D --history 0.5 --task-learner bayes --out CK
    python docs/results/bayes_serving_variants.py CK VARIANT OUT.json [D]      (D: ml-100k by default)

VARIANT is comma-separated key=value (empty or "mode=ou": the shipped update):

* ``mode=warm`` — one Newton step on the window's posterior objective from the previous mean (no OU step);
* ``mode=full[,topm=M]`` — the shipped update with the full Hessian of the ranking block (over the top-M items of the
  softmax if M > 0) instead of its diagonal;
* ``rho=R`` — persistence; ``pf=F`` — F × the ranking block's prior precision;
* ``pred=C`` — rank by mean score + C × its posterior variance (C < 0: risk-averse);
* ``probit=1`` — rank by mean / sqrt(1 + π/8 · variance) (the probit approximation of the predictive);
* ``cnt=A`` — the ranking likelihood times n^A (n: window events); ``damp=D`` — D × the Newton step;
  ``iso=1`` — the diagonal Hessian replaced by its mean (an isotropic step).

They monkeypatch adapters.meta.bayes and TaskLearner.scores in this process only.
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import torch  # noqa: E402

torch.set_num_threads(1)
import adapters.meta.bayes as bayes  # noqa: E402
from adapters.evaluation.config import EvaluationConfig  # noqa: E402
from adapters.evaluation.prequential_run import run_prequential  # noqa: E402
from adapters.online import tasklearner as tlm  # noqa: E402

ck, variant, out = sys.argv[1], sys.argv[2], sys.argv[3]
dataset = sys.argv[4] if len(sys.argv) > 4 else "ml-100k"
opts = dict(kv.split("=") for kv in variant.split(",") if "=" in kv)
mode = opts.get("mode", "ou")
rho = float(opts.get("rho", 0.5))
pf = float(opts.get("pf", 1.0))      # prior factor on ranking block
pred = float(opts.get("pred", 0.0))  # + pred * var in scores
damp = float(opts.get("damp", 1.0))
cnt = float(opts.get("cnt", 0.0))
orig_gh = bayes._ranking_grad_hessian
def gh(model, states, support, **kw):
    g, h = orig_gh(model, states, support, **kw)
    if cnt:
        n = (support.mask & (support.items > 0)).sum(1, keepdim=True).clamp(min=1).to(g.dtype)
        c = n ** cnt
        g, h = g * c, h * c
    return g, h
bayes._ranking_grad_hessian = gh

orig_prior = bayes.prior_precision
def prior(model):
    p = orig_prior(model).clone()
    m = bayes._ranking_mask(model)
    p[m] = p[m] * pf
    return p
bayes.prior_precision = prior

iso = int(opts.get("iso", 0))
if iso or damp != 1.0:
    _gh0 = bayes._ranking_grad_hessian
    def gh_iso(model, states, support, **kw):
        g, h = _gh0(model, states, support, **kw)
        if iso:
            m = bayes._ranking_mask(model)
            hm = h[:, m].mean(1, keepdim=True)
            h = torch.where(m, hm.expand_as(h), h)
        return g * damp, h
    bayes._ranking_grad_hessian = gh_iso
def warm_adapt(model, states, support, persistence=0.0):
    theta0, s, _ = bayes.relax(model, states, support, 1.0)  # ρ = 1: from the previous mean, no OU step
    P0 = bayes.prior_precision(model)
    g, h = bayes._ranking_grad_hessian(model, s, support)
    g = g + P0 * (s - theta0)
    new_s = torch.where(bayes._ranking_mask(model), s - damp * g / (h + P0), s)
    return bayes.finish(model, states, support, theta0, new_s, h + P0)


def full_adapt(model, states, support, persistence=0.0):
    theta0, s, p_pred = bayes.relax(model, states, support, persistence)
    g, h = bayes._ranking_grad_hessian(model, s, support)
    entries = bayes.posterior_entries(model)
    q, bias = model.item_emb.detach()[1:], model.item_bias.detach()[1:]
    p = torch.softmax(torch.addmm(bias, model.ranking_vectors(s), q.t()), dim=1)
    if topm:
        vals, idx = p.topk(topm, dim=1)
        qq = q[idx]  # B, M, d
        He = torch.einsum("bm,bmd,bme->bde", vals, qq, qq)
    else:
        He = torch.einsum("bn,nd,ne->bde", p, q, q)
    mq = p @ q
    He = He - mq[:, :, None] * mq[:, None, :]
    has = (g[:, entries].abs().sum(1) > 0).to(q.dtype)
    He = He * has[:, None, None] * float(model.config.rank_weight)
    d = model.config.dim
    gain = getattr(model, "gain_index", None)
    if gain is not None:
        ctx = s[:, model.ctx_block]
        J = torch.cat([torch.eye(d).expand(s.shape[0], d, d), ctx[:, :, None]], dim=2)
        H = J.transpose(1, 2) @ He @ J
    else:
        H = He
    A = H + torch.diag_embed(p_pred[:, entries])
    step = torch.linalg.solve(A, g[:, entries][:, :, None])[:, :, 0]
    new_s = s.clone()
    new_s[:, entries] = s[:, entries] - step
    return bayes.finish(model, states, support, theta0, new_s, h + p_pred)


topm = int(opts.get("topm", 0))
if mode == "full":
    bayes.adapt = full_adapt
if mode == "warm":
    bayes.adapt = warm_adapt

probit = float(opts.get("probit", 0.0))
if probit:
    orig_scores0 = tlm.TaskLearner.scores
    def scores_p(self, states, users, candidates=None):
        sc = orig_scores0(self, states, users, candidates)
        sd = bayes.score_std(self.adapter, states, candidates)
        return sc / torch.sqrt(1 + probit * 3.141592653589793 / 8 * sd * sd)
    tlm.TaskLearner.scores = torch.no_grad()(scores_p)
if pred:
    orig_scores = tlm.TaskLearner.scores
    def scores(self, states, users, candidates=None):
        sc = orig_scores(self, states, users, candidates)
        if self.bayes:
            sd = bayes.score_std(self.adapter, states, candidates)
            sc = sc + pred * sd * sd
        return sc
    tlm.TaskLearner.scores = torch.no_grad()(scores)

t = time.time()
report = run_prequential(EvaluationConfig(dataset=dataset, batch_seconds=1.0, checkpoint=ck, task_learner=opts.get("tl", "bayes"),
                                          persistence=rho, models=("metarec",), progress=False))
report["variant"] = variant
open(out, "w").write(json.dumps(report, indent=1))
print(variant, round(time.time() - t), {k: round(v, 4) for k, v in report["models"]["metarec"].items()}, flush=True)

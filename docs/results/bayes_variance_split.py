"""How wide the bayes posterior's score uncertainty is against the spread of the scores: 64 random 20-item windows
(rated 4), three updates, then the mean variance of the scores from u and from the gain, against the std of the
scores over the catalogue.

    metarec train --dataset ml-100k --history 0.5 --task-learner bayes --out CK
    python docs/results/bayes_variance_split.py CK
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import torch  # noqa: E402

torch.set_num_threads(1)
from adapters.base import SupportBatch  # noqa: E402
from adapters.meta import bayes  # noqa: E402
from adapters.meta.checkpoint import Checkpoint  # noqa: E402

ck = Checkpoint.load(sys.argv[1])
m = ck.adapter
g = torch.Generator().manual_seed(0)
B = 64
items = torch.randint(1, m.item_emb.shape[0], (B, 20), generator=g)
sb = SupportBatch.from_lists(items.tolist(), [[4.0] * 20] * B)
s = bayes.init_states(m, sb.users)
for _ in range(3):
    s = bayes.adapt(m, s, sb, 0.5)
ms, prec = bayes.split(m, s)
var = 1 / bayes.full_precision(m, prec)
u_blk, gain = bayes._ranking_entries(m)
q = m.item_emb
vu = (q * q) @ var[:, u_blk].t()
z = ms[:, m.ctx_block] @ q.t()
vg = (z * z * var[:, gain:gain + 1])
sc = m.score(ms, sb.users)
print("prior prec u", bayes.prior_precision(m)[u_blk].mean().item(), "gain", bayes.prior_precision(m)[gain].item())
print("post prec u mean", prec[:, :-1].mean().item(), "gain", prec[:, -1].mean().item())
print("var_u mean", vu.mean().item(), "var_g mean", vg.mean().item())
top = sc.topk(10, dim=1).indices
print("score std over catalogue", sc.std(1).mean().item(), "top10 var_u", vu.t().gather(1, top).mean().item(), "top10 var_g", vg.gather(1, top).mean().item())
n = q.norm(dim=1)
print("qnorm quantiles", n.quantile(torch.tensor([0.1, 0.5, 0.9])).tolist())
print("bias corr with qnorm", torch.corrcoef(torch.stack([m.item_bias.detach()[1:], n[1:].detach()]))[0, 1].item())

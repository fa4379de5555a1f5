"""ML-100K prequential, metarec only, --item-state shared with NEIGHBOURS in-links per item and a popularity
half-life of HALF_LIFE_S seconds: python docs/results/shared_neighbours_experiment.py NEIGHBOURS HALF_LIFE_S TAG"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from dataclasses import replace
import adapters.evaluation.prequential_run as pr
from adapters.evaluation.config import EvaluationConfig
from adapters.online.itemshare import ShareConfig
import adapters.online.sharedside as ss

nb = int(sys.argv[1]); hl = float(sys.argv[2]); tag = sys.argv[3]
orig = pr.build_models
def only_metarec(stream, ck, erm, online, names=()):
    online = replace(online, shared_items=ShareConfig(half_life_s=hl, max_neighbours=nb))
    return [m for m in orig(stream, ck, erm, online) if m.name == "metarec"]
pr.build_models = only_metarec
r = pr.run_prequential(EvaluationConfig(dataset="ml-100k", batch_seconds=1.0, item_state="shared", progress=False))
print(tag, {k: round(v, 4) for k, v in r["models"]["metarec"].items()})

"""Mean and largest durable user record (adapters/online/records.py, bytes) under each task learner, over the users of
ML-1M's first 100,000 events in time order (micro-batches of 500 events; the cached bench checkpoint, else one
trained here on all of ML-1M, or the checkpoint directory given): python docs/results/record_size.py [CHECKPOINT]"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import numpy as np  # noqa: E402

from adapters.data.datasets import load_dataset  # noqa: E402
from adapters.meta.checkpoint import Checkpoint  # noqa: E402
from adapters.online.learner import Interaction, OnlineConfig, OnlineLearner  # noqa: E402
from stream.bench.inputs import bench_checkpoint  # noqa: E402

ds = load_dataset("ml-1m")
ck = Checkpoint.load(sys.argv[1] if len(sys.argv) > 1 else bench_checkpoint(ds))
order = np.argsort(ds.timestamps, kind="stable")[:100_000]
events = [Interaction(str(ds.user_ids[k]), str(ds.item_ids[k]), float(ds.ratings[k]), float(ds.timestamps[k]), 0, n)
          for n, k in enumerate(order)]
for kind in ("gradient", "bayes"):
    learner, records = OnlineLearner(ck, OnlineConfig(task_learner=kind)), {}
    for s in range(0, len(events), 500):
        records.update(learner.process(events[s:s + 500], records, publish=False, measure_loss=False).records)
    sizes = [len(r.to_bytes()) for r in records.values()]
    print(f"{kind}: {len(sizes)} users, record mean {np.mean(sizes):.0f} B, max {max(sizes)} B, "
          f"state {4 * learner.task.width} B")

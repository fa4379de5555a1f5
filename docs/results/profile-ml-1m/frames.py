"""Inclusive share of samples per thread for frames whose text contains each NEEDLE, from py-spy's raw output.

Run: ``python docs/results/profile-ml-1m/frames.py docs/results/profile-ml-1m/run1/worker.txt.gz NEEDLE...``
(``worker.txt`` or ``worker.txt.gz``, as written by ``python -m stream.bench.profile``). A stack counts once per
needle however many of its frames match; shares are of all samples of all threads.
"""
import gzip
import re
import sys
from collections import Counter

path, needles = sys.argv[1], sys.argv[2:]
text = (gzip.open(path, "rt") if path.endswith(".gz") else open(path)).read()
total, hits = 0, Counter()
for line in text.splitlines():
    stack, _, count = line.rpartition(" ")
    if not stack or not count.isdigit():
        continue
    n = int(count)
    total += n
    frames = stack.split(";")
    thread = re.sub(r"Thread-\d+", "Thread", re.sub(r"^thread \(\d+\):?\s*", "", frames[0])) or "unnamed"
    for needle in needles:
        if any(needle in f for f in frames[1:]):
            hits[thread, needle] += n
            hits["all threads", needle] += n
print(f"{total} samples")
for (thread, needle), n in sorted(hits.items(), key=lambda kv: (kv[0][1], -kv[1])):
    print(f"{needle}\t{thread}\t{n / total:.1%}")

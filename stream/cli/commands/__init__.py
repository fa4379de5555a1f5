"""One module per ``metarec`` sub-command.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported lazily so that ``metarec --help`` stays fast and ``metarec broker`` never imports torch.
"""
from __future__ import annotations

COMMANDS: dict[str, str] = {
    "broker": "Run the embedded Kafka-protocol broker (Tansu) in the foreground.",
    "train": "Meta-train an initialization θ0 and write a checkpoint directory.",
    "evaluate": "Offline evaluation (cold-start or prequential) with baselines in the same run.",
    "replay": "Replay a dataset, or a time range of a topic, into a topic.",
    "worker": "Run the stream processor: interactions in, per-user top-K lists out.",
    "trainer": "Continual meta-training from a topic: a new model version every N events, workers switch to it.",
    "forget": "Forget a user: their record deleted from the worker group's state, acknowledged on the output topic.",
    "bench": "Run the performance benchmark.",
    "synth": "Generate a synthetic interaction stream with planted interest drift or item churn.",
    "demo": "Broker + training + replay + worker on MovieLens-100K, end to end (what `make demo` runs).",
}

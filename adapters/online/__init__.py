"""The online learner: per-user records, the adaptation of a micro-batch, freshness, the online item side."""

"""The worker runtime on confluent-kafka (see :mod:`stream.runtime.kafka.runner`)."""

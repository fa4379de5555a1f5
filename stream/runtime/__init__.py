"""Runtimes that drive the worker core from Kafka."""

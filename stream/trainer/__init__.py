"""Continual meta-training from the stream: a topic's events as training data, and the ``metarec trainer`` service."""

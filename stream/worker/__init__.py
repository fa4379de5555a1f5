"""The stream worker without Kafka: its configuration, the pure micro-batch core, expiry, model versions, metrics, HTTP."""

"""Kafka without faust: client configuration, the embedded broker, the event schema, replay of datasets and topics."""

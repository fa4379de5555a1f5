"""metarec.stream — the Kafka side: schemas, embedded broker, replay, the faust worker, HTTP, the CLI."""

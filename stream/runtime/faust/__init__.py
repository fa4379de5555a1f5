"""The faust runtime: the only package that imports faust, mode or aiokafka (app, table, delivery, commits, repairs)."""

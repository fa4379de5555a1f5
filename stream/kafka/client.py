"""The one place that builds Kafka client configurations (confluent-kafka; faust's credentials are derived from it).

Security settings pass through to every client, from two sources (later wins):

1. environment variables ``METAREC_KAFKA_<PROPERTY>``: the librdkafka property in upper case with dots
   replaced by underscores, for the properties ``security.protocol``, ``ssl.*``, ``sasl.*`` and
   ``enable.ssl.certificate.verification``; e.g. ``METAREC_KAFKA_SECURITY_PROTOCOL=SASL_SSL``,
   ``METAREC_KAFKA_SASL_MECHANISM=SCRAM-SHA-512``, ``METAREC_KAFKA_SASL_USERNAME=alice``,
   ``METAREC_KAFKA_SASL_PASSWORD=...``, ``METAREC_KAFKA_SSL_CA_LOCATION=/etc/ssl/ca.pem``;
2. the flag ``--kafka-option KEY=VALUE`` (repeatable; any librdkafka property) on the commands that talk to Kafka.

The faust worker gets the same settings as ``broker_credentials`` (:mod:`stream.runtime.faust.credentials`, with
:func:`ssl_context` for the TLS part).

Example
-------
>>> cfg = producer_config("127.0.0.1:9092", environ={"METAREC_KAFKA_SECURITY_PROTOCOL": "SSL"})
>>> cfg["security.protocol"], cfg["partitioner"]
('SSL', 'murmur2_random')
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import ssl
import time
import uuid
from collections.abc import Mapping
from typing import Any

from adapters.errors import MetarecError

log = logging.getLogger(__name__)
librdkafka_log = logging.getLogger("stream.kafka.client.librdkafka")

ENV_PREFIX = "METAREC_KAFKA_"
_SECURITY_PREFIXES = ("security.protocol", "ssl.", "sasl.", "enable.ssl.certificate.verification")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9_])?"  # underscores: docker-compose container names
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])"
_ADDRESS = re.compile(rf"^{_HOST}:(\d{{1,5}})$")


def validate_bootstrap(bootstrap: str) -> str:
    """Check ``host:port[,host:port...]`` and return it normalised (no spaces); :class:`MetarecError` otherwise."""
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise MetarecError("bootstrap address is empty (expected host:port, e.g. 127.0.0.1:9092)")
    parts = [p.strip() for p in bootstrap.split(",")]
    for part in parts:
        m = _ADDRESS.match(part)
        if m is None or not 0 < int(m.group(1)) < 65536:
            raise MetarecError(f"bad bootstrap address {bootstrap!r}: expected host:port[,host:port...], "
                               f"e.g. 127.0.0.1:9092")
    return ",".join(parts)


def security_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka security properties read from ``METAREC_KAFKA_*`` variables."""
    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        prop = var[len(ENV_PREFIX):].lower().replace("_", ".")
        if prop.startswith(_SECURITY_PREFIXES):
            out[prop] = value
    return out


def _rdkafka_logger() -> logging.Logger:
    # librdkafka reports every failed connection attempt; keep that out of user-facing output unless -v.
    if logging.getLogger().getEffectiveLevel() > logging.INFO and librdkafka_log.level == logging.NOTSET:
        librdkafka_log.setLevel(logging.CRITICAL)
    return librdkafka_log


def client_config(bootstrap: str, overrides: Mapping[str, Any] | None = None, *,
                  environ: Mapping[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Base librdkafka configuration: bootstrap + security pass-through + overrides.

    ``kwargs`` use underscores for dots (``linger_ms=5`` → ``linger.ms``); ``overrides`` uses real names.
    """
    cfg: dict[str, Any] = {"bootstrap.servers": validate_bootstrap(bootstrap),
                           "socket.connection.setup.timeout.ms": 5000,
                           "logger": _rdkafka_logger()}
    cfg.update(security_from_env(environ))
    cfg.update({k.replace("_", "."): v for k, v in kwargs.items()})
    cfg.update(dict(overrides or {}))
    return cfg


def producer_config(bootstrap: str, overrides: Mapping[str, Any] | None = None, *,
                    environ: Mapping[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Idempotent producer, murmur2 partitioning (same partitions as faust/aiokafka/Java for a key)."""
    base = {"enable.idempotence": True, "acks": "all", "partitioner": "murmur2_random",
            "linger.ms": 10, "batch.num.messages": 10_000, "compression.type": "none"}
    base.update({k.replace("_", "."): v for k, v in kwargs.items()})
    base.update(dict(overrides or {}))
    return client_config(bootstrap, base, environ=environ)


def consumer_config(bootstrap: str, group_id: str | None = None, overrides: Mapping[str, Any] | None = None, *,
                    commit: bool = False, environ: Mapping[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Consumer; commits nothing unless ``commit=True`` (a random unused group id when none is given)."""
    base: dict[str, Any] = {"group.id": group_id or f"metarec-nocommit-{uuid.uuid4().hex[:12]}",
                            "enable.auto.commit": bool(commit), "enable.auto.offset.store": bool(commit),
                            "auto.offset.reset": "earliest", "enable.partition.eof": False}
    base.update({k.replace("_", "."): v for k, v in kwargs.items()})
    base.update(dict(overrides or {}))
    return client_config(bootstrap, base, environ=environ)


def check_reachable(bootstrap: str, timeout: float = 5.0, *, overrides: Mapping[str, Any] | None = None,
                    environ: Mapping[str, str] | None = None) -> Any:
    """Metadata of the cluster at ``bootstrap``; :class:`MetarecError` when nothing answers within ``timeout``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient(client_config(bootstrap, overrides, environ=environ))
    except KafkaException as exc:  # an invalid property (--kafka-option, METAREC_KAFKA_*)
        raise MetarecError(f"bad Kafka client configuration: {exc.args[0].str() if exc.args else exc}") from None
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise MetarecError(f"no Kafka broker answered at {bootstrap} within {timeout:g} s "
                           f"({exc.args[0].str() if exc.args else exc})") from None


def ensure_topics(bootstrap: str, topics: Mapping[str, tuple[int, Mapping[str, str] | None]], *,
                  timeout: float = 10.0, replication_factor: int = 1, overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Create the missing topics; return ``{name: partition count}`` of every topic asked for.

    ``topics`` maps a name to ``(partitions, config)``. An existing topic is left as it is (its
    partition count may differ: a warning is logged).
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(bootstrap, overrides, environ=environ))
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise MetarecError(f"no Kafka broker answered at {bootstrap} within {timeout:g} s "
                           f"({exc.args[0].str() if exc.args else exc})") from None
    missing = [NewTopic(name, num_partitions=int(parts), replication_factor=replication_factor,
                        config=dict(cfg or {}))
               for name, (parts, cfg) in topics.items() if name not in meta.topics]
    if missing:
        futures = admin.create_topics(missing, operation_timeout=timeout, request_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout)
                log.info("created topic %s", name)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise MetarecError(f"cannot create topic {name!r}: {err.str() if err is not None else exc}") from None
    result: dict[str, int] = {}
    for _ in range(50):  # metadata of newly created topics can lag for a moment
        meta = admin.list_topics(timeout=timeout)
        if all(n in meta.topics and meta.topics[n].partitions for n in topics):
            break
        time.sleep(0.1)
    for name, (parts, _cfg) in topics.items():
        t = meta.topics.get(name)
        result[name] = len(t.partitions) if t is not None else 0
        if t is not None and result[name] != int(parts):
            log.warning("topic %s has %d partitions (asked for %d); left unchanged", name, result[name], parts)
    return result


# --- command-line helpers -------------------------------------------------------------------------

def _parse_options(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.replace("\n", ";").split(";"))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


class _MergeOptions(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        merged = dict(getattr(namespace, self.dest, None) or {})
        merged.update(values)
        setattr(namespace, self.dest, merged)


def add_kafka_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--kafka-option KEY=VALUE`` (repeatable; env ``METAREC_KAFKA_OPTION``, ``;``-separated)."""
    parser.add_argument("--kafka-option", action=_MergeOptions, type=_parse_options, default={}, metavar="KEY=VALUE",
                        help="extra librdkafka property for every Kafka client (repeatable), e.g. "
                             "--kafka-option security.protocol=SASL_SSL; security settings are also read from "
                             "METAREC_KAFKA_SECURITY_PROTOCOL, METAREC_KAFKA_SASL_*, METAREC_KAFKA_SSL_*")


def kafka_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The ``--kafka-option`` values of parsed ``args`` (empty when the flag is absent)."""
    return dict(getattr(args, "kafka_option", None) or {})


# --- TLS --------------------------------------------------------------------------------------

def ssl_context(cfg: Mapping[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cfg.get("ssl.ca.location"))
    if cfg.get("ssl.certificate.location"):
        ctx.load_cert_chain(cfg["ssl.certificate.location"], cfg.get("ssl.key.location"), cfg.get("ssl.key.password"))
    if str(cfg.get("enable.ssl.certificate.verification", "true")).lower() in ("false", "0"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def produce(producer: Any, topic: str, **kwargs: Any) -> None:
    """``producer.produce(topic, **kwargs)``, waiting for librdkafka to send while its local queue is full."""
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:  # local queue full: let librdkafka send
            producer.poll(0.05)

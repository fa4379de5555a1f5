"""faust ``broker_credentials`` from the one librdkafka-style client configuration (:mod:`stream.kafka.client`).

    security.protocol SSL                     -> faust.SSLCredentials(ssl context)
    security.protocol SASL_PLAINTEXT/SASL_SSL -> faust.SASLCredentials(username=sasl.username,
                                                 password=sasl.password, mechanism=sasl.mechanism)
    sasl.mechanism GSSAPI                     -> faust.GSSAPICredentials(sasl.kerberos.service.name)
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.errors import MetarecError
from stream.kafka.client import ssl_context


def faust_credentials(cfg: Mapping[str, Any]) -> Any:
    """faust ``broker_credentials`` equivalent to the librdkafka config ``cfg`` (None for PLAINTEXT)."""
    protocol = str(cfg.get("security.protocol", "PLAINTEXT")).upper()
    if protocol == "PLAINTEXT":
        return None
    import faust

    ctx = ssl_context(cfg) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(ctx)
    if protocol not in ("SASL_PLAINTEXT", "SASL_SSL"):
        raise MetarecError(f"unsupported security.protocol {protocol!r} (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)")
    mechanism = str(cfg.get("sasl.mechanism", cfg.get("sasl.mechanisms", "PLAIN"))).upper()
    if mechanism == "GSSAPI":
        return faust.GSSAPICredentials(kerberos_service_name=cfg.get("sasl.kerberos.service.name", "kafka"),
                                       ssl_context=ctx)
    if mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise MetarecError(f"unsupported sasl.mechanism {mechanism!r} for the faust worker")
    return faust.SASLCredentials(username=cfg.get("sasl.username"), password=cfg.get("sasl.password"),
                                 ssl_context=ctx, mechanism=mechanism)

"""faust's broker credentials from the one client configuration (stream.runtime.faust.credentials)."""
from __future__ import annotations

import faust
import pytest

from adapters.errors import MetarecError
from stream.kafka.client import client_config
from stream.runtime.faust.credentials import faust_credentials


def test_faust_credentials_mapping():
    assert faust_credentials({"security.protocol": "PLAINTEXT"}) is None
    creds = faust_credentials({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                               "sasl.username": "alice", "sasl.password": "pw"})
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("alice", "pw", "SCRAM-SHA-256")
    assert isinstance(faust_credentials({"security.protocol": "SSL"}), faust.SSLCredentials)
    with pytest.raises(MetarecError, match="security.protocol"):
        faust_credentials({"security.protocol": "CARRIER_PIGEON"})


def test_credentials_follow_the_environment():
    cfg = client_config("h:1", environ={"METAREC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                        "METAREC_KAFKA_SASL_USERNAME": "u", "METAREC_KAFKA_SASL_PASSWORD": "p"})
    creds = faust_credentials(cfg)
    assert isinstance(creds, faust.SASLCredentials) and (creds.username, creds.password) == ("u", "p")
    assert creds.mechanism.value == "PLAIN"

"""Shared pytest fixtures.

* ``broker`` (session): bootstrap string ``"127.0.0.1:PORT"`` of one embedded Tansu broker (memory storage),
  started with :class:`stream.kafka.broker.EmbeddedBroker` and stopped at the end of the session.
* ``topic_name`` (function): a topic name unique to the test, e.g. ``"t-test-replay-orders-3f9a1c2b"``.
* ``runtime`` (module, parametrized): each Kafka runtime of the worker in turn (``metarec worker --runtime``): a test
  that takes it runs once per runtime. Its faust runs are marked ``faust`` (as is a test written for faust alone):
  ``make test`` leaves them out (``-m "not faust"``, the default runtime only, under 15 minutes), ``make test-faust``
  runs them, and CI runs both.

Tests marked ``@pytest.mark.broker`` get the broker started even if they do not ask for the fixture, and
tests that use the ``broker`` fixture are marked ``broker`` automatically (``-m "not broker"`` skips them all).
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of the session's embedded Kafka-protocol broker."""
    from stream.kafka.broker import EmbeddedBroker

    with EmbeddedBroker(host="127.0.0.1") as embedded:
        yield embedded.bootstrap


RUNTIMES = ("kafka", "faust")  #: every runtime the worker's tests run on (stream.worker.config.RUNTIMES)


@pytest.fixture(scope="module", params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    """A worker runtime (``--runtime``); tests that take it run on each."""
    return request.param


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A fresh topic name for this test (letters, digits, dashes; < 100 characters)."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-").lower()[:60]
    return f"t-{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _broker_for_marked_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("broker") is not None:
        request.getfixturevalue("broker")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()) and item.get_closest_marker("broker") is None:
            item.add_marker(pytest.mark.broker)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("runtime") == "faust":
            item.add_marker(pytest.mark.faust)

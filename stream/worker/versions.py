"""Model versions: which checkpoint to serve, and noticing a newer one without restarting the worker.

``--checkpoint PATH`` is either

* a checkpoint directory (it holds a ``*.safetensors`` file), served as it is — it is still watched: rewriting it
  in place (new files) switches to the rewritten version; or
* a *model directory* holding versioned checkpoint directories, e.g. ``models/v1``, ``models/v2``: the one named
  by the file ``PATH/LATEST`` (one line: a directory name relative to PATH, or an absolute path) is served; without
  ``LATEST``, the most recently modified checkpoint directory.

Publishing a new version safely: write the new checkpoint directory completely, then write ``LATEST`` (or, without
``LATEST``, create the directory under another name and ``rename`` it into PATH). A candidate that fails to load
is skipped with one warning and retried when its directory changes (:class:`CheckpointWatcher`); the worker keeps
serving the current version, and :mod:`stream.worker.rollout` counts the failure by reason.

What happens to users on a switch (see :meth:`adapters.online.learner.OnlineLearner.switch`): their stored windows and
seen items survive (remapped to the new item vocabulary), their adapted vectors do not — at their next event they
are re-adapted from the new θ0 on their stored window. Lists carry the ``model_version`` that produced them.

Example
-------
>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for name in ("v1", "v2"):
...     (root / name).mkdir(); _ = (root / name / "weights.safetensors").write_bytes(b"")
>>> _ = (root / "LATEST").write_text("v1")
>>> resolve_checkpoint(root).name
'v1'
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.errors import MetarecError
from stream.worker.rollout import CORRUPT, MISSING, ModelRollout, RolloutError, classify

if TYPE_CHECKING:
    from adapters.meta.checkpoint import Checkpoint

log = logging.getLogger(__name__)

LATEST = "LATEST"


def is_checkpoint_dir(path: Path) -> bool:
    """True for a directory that holds a checkpoint (a ``*.safetensors`` file)."""
    try:
        return path.is_dir() and any(p.suffix == ".safetensors" for p in path.iterdir())
    except OSError:
        return False


def _newest_mtime(path: Path) -> int:
    try:
        return max([path.stat().st_mtime_ns] + [p.stat().st_mtime_ns for p in path.iterdir()])
    except OSError:
        return 0


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory that ``path`` designates now (see the module docstring).

    Raises :class:`~stream.worker.rollout.RolloutError` (a :class:`MetarecError`) with a ``reason`` and the
    ``candidate`` it was looking for when there is none.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise RolloutError(f"checkpoint path {root} does not exist (train one with `metarec train ... --out DIR`)",
                           MISSING, str(root))
    if not root.is_dir():
        raise RolloutError(f"checkpoint path {root} is not a directory", MISSING, str(root))
    latest = root / LATEST
    if latest.is_file():
        try:
            name = latest.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RolloutError(f"cannot read {latest}: {exc}", CORRUPT, LATEST) from None
        target = Path(name) if os.path.isabs(name) else root / name
        if not is_checkpoint_dir(target):
            raise RolloutError(f"{latest} names {name!r}, which is not a checkpoint directory", MISSING, name)
        return target
    if is_checkpoint_dir(root):
        return root
    candidates = [p for p in root.iterdir() if not p.name.startswith(".") and is_checkpoint_dir(p)]  # (.incoming-*)
    if not candidates:
        raise RolloutError(f"{root} is neither a checkpoint directory nor a directory of checkpoint directories",
                           MISSING, str(root))
    return max(candidates, key=lambda p: (_newest_mtime(p), p.name))


def publish_version(root: str | Path, checkpoint: Checkpoint, name: str | None = None) -> Path:
    """Write ``checkpoint`` as a new version under the model directory ``root`` and point ``LATEST`` at it.

    Both steps are atomic: the checkpoint is written to a hidden temporary directory and renamed into place, then
    ``LATEST`` is replaced by a rename; a worker polling ``root`` never sees a half-written version. ``name``
    defaults to the checkpoint's version. Returns the version directory.
    """
    import tempfile

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / (name or checkpoint.version)
    if target.exists():
        raise MetarecError(f"version directory {target} exists already")
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    checkpoint.save(tmp)
    os.rename(tmp, target)
    latest_tmp = root / f".{LATEST}.{os.getpid()}"
    latest_tmp.write_text(target.name + "\n", encoding="utf-8")
    os.replace(latest_tmp, root / LATEST)
    return target


def signature(path: Path) -> tuple[str, int]:
    """What changes when the checkpoint at ``path`` is replaced: its path and newest file time."""
    return str(path.resolve()), _newest_mtime(path)


class CheckpointWatcher:
    """Polls ``--checkpoint`` and returns a newly loaded checkpoint when it designates another version.

    ``loader`` is :meth:`adapters.meta.checkpoint.Checkpoint.load` (injectable for tests). ``rollout`` is the
    worker's :class:`~stream.worker.rollout.ModelRollout` (``WorkerMetrics.rollout``): the watcher reports each
    candidate it loads and each one it cannot, and reads from it which version the worker actually serves (a
    switch the learner refused leaves the old one). A candidate that failed is not read again until its directory
    changes (its :func:`signature`) or ``retry_s`` seconds have passed; a failure is logged and counted once.
    """

    def __init__(self, path: str | Path, loader: Callable[[Path], Checkpoint], rollout: ModelRollout | None = None,
                 retry_s: float = 30.0) -> None:
        self.path = Path(path)
        self.loader = loader
        self.rollout = rollout or ModelRollout()
        self.retry_s = float(retry_s)
        self.current: Checkpoint | None = None  #: the checkpoint last loaded (served, unless the switch to it was refused)
        self._signature: tuple[str, int] | None = None
        self._failed: tuple[str, int] | None = None  #: signature of the candidate that failed last
        self._failed_at = 0.0  #: when it failed (monotonic)

    def load_initial(self) -> Checkpoint:
        """Load the checkpoint to serve at start (errors are the user's: :class:`MetarecError`)."""
        target = resolve_checkpoint(self.path)
        sig = signature(target)
        try:
            self.current = self.loader(target)
        except MetarecError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken checkpoint is a user error at start
            raise MetarecError(f"cannot load checkpoint {target}: {type(exc).__name__}: {exc}") from None
        self._signature = sig
        self.rollout.loaded(self.current.version, sig[1] / 1e9)
        return self.current

    def served_version(self) -> str | None:
        """The version the worker serves (the roll-out's, else the one this watcher loaded last)."""
        return self.rollout.version or (self.current.version if self.current is not None else None)

    def poll(self) -> Checkpoint | None:
        """A newly loaded checkpoint of another version, or None (nothing new, or the candidate is not loadable)."""
        try:
            target = resolve_checkpoint(self.path)
        except MetarecError as exc:
            self.rollout.failed(getattr(exc, "candidate", str(self.path)), classify(exc), str(exc))
            return None
        sig = signature(target)
        if sig == self._signature:  # loaded already: served, or refused by the learner (then still failing)
            if self.current is None or self.current.version == self.served_version():
                self.rollout.settled()
            return None
        if sig == self._failed and time.monotonic() - self._failed_at < self.retry_s:
            return None
        try:
            ckpt = self.loader(target)
        except Exception as exc:  # noqa: BLE001 - maybe still being written: retry when it changes
            self._failed, self._failed_at = sig, time.monotonic()
            self.rollout.failed(target.name, classify(exc), f"{type(exc).__name__}: {exc}")
            return None
        self._failed = None
        self._signature = sig
        self.rollout.loaded(ckpt.version, sig[1] / 1e9)
        if ckpt.version == self.served_version():
            log.info("model watch: %s has the version already served (%s)", target, ckpt.version)
            self.current = ckpt
            self.rollout.settled()
            return None
        self.current = ckpt
        return ckpt

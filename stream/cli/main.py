"""The ``metarec`` command line (also ``python -m stream``).

Conventions, for every sub-command:

* every flag ``--some-flag`` also reads the environment variable ``METAREC_SOME_FLAG``; the flag wins;
* errors in arguments, data or configuration print one line on stderr and exit with code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from adapters.errors import MetarecError
from stream.cli.argtypes import RemovedFlag
from stream.cli.commands import COMMANDS

ENV_PREFIX = "METAREC_"


class _OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are a single line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def env_var_for(action: argparse.Action) -> str | None:
    """The ``METAREC_*`` variable that feeds ``action``, or None for positionals and help."""
    longs = [o for o in action.option_strings if o.startswith("--")]
    if not longs or action.dest in ("help", "version"):
        return None
    return ENV_PREFIX + longs[0][2:].upper().replace("-", "_")


def apply_env_defaults(parser: argparse.ArgumentParser, environ: dict[str, str] | os._Environ[str]) -> None:
    """Let ``METAREC_<FLAG>`` provide the default of every long flag of ``parser``.

    The value goes through the action's ``type`` and ``choices``, so a bad value in the environment
    is reported exactly like a bad flag.
    """
    for action in parser._actions:
        var = env_var_for(action)
        if var is None or var not in environ:
            continue
        if isinstance(action, RemovedFlag):
            parser.error(f"environment variable {var} was removed: {action.replacement}")
        raw = environ[var]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            truthy = raw.strip().lower() in ("1", "true", "yes", "on")
            value: object = truthy if isinstance(action, argparse._StoreTrueAction) else not truthy
        else:
            try:
                value = action.type(raw) if callable(action.type) else raw
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                parser.error(f"environment variable {var}={raw!r}: {exc}")
            if action.choices is not None and value not in action.choices:
                parser.error(f"environment variable {var}={raw!r}: choose from {', '.join(map(str, action.choices))}")
        action.default = value
        action.required = False


def build_parser(environ: dict[str, str] | os._Environ[str] | None = None) -> argparse.ArgumentParser:
    environ = os.environ if environ is None else environ
    parser = _OneLineParser(
        prog="metarec",
        description="Streaming recommender that adapts to each user in real time by meta-learning.",
        epilog="Every flag --x-y also reads the environment variable METAREC_X_Y (the flag wins).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    sub.required = True
    for name, summary in COMMANDS.items():
        module = importlib.import_module(f"stream.cli.commands.{name}")
        p = sub.add_parser(name, help=summary, description=getattr(module, "DESCRIPTION", summary),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        apply_env_defaults(p, environ)
        p.set_defaults(_module=module)
    apply_env_defaults(parser, environ)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args._module.run(args) or 0)
    except MetarecError as exc:
        sys.stderr.write(f"metarec {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"metarec {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

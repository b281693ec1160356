"""The `robolearn` command: one entry point, one verb per module in robolearn/commands/.

Each command module's `register(subparsers)` adds its verb(s), their arguments and their handler; this file only
builds the top-level parser and dispatches. Expected failures (a bad file, config, override or name, a missing
device or SDK, a locked or corrupt store, a bad checkpoint) come out as one line
`robolearn VERB: error: MESSAGE` on stderr with exit code 2; `robolearn --debug VERB ...` shows the traceback.
Anything else is a bug and keeps its traceback. Nothing here imports torch: verbs import their work when they run.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from robolearn.config_files import compose, with_overrides  # noqa: F401  (part of the CLI's Python API)

# the verbs, in the order `robolearn --help` lists them
COMMAND_MODULES = ("train", "evaluate", "models", "collect", "teleop", "deploy", "replay", "convert", "info", "bench")

# errors a user can cause, besides OSError and ValueError (ConfigError, UnknownNameError, StoreFormatError, RigError);
# looked up by name among the modules already imported, since a module never imported cannot have raised
EXPECTED_ELSEWHERE = (("robolearn.data.store", "StoreLockedError"), ("robolearn.data.store_errors", "StoreLockedError"),
                      ("hydra.errors", "HydraException"),
                      ("omegaconf.errors", "OmegaConfBaseException"), ("yaml", "YAMLError"))


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, like every other error of the command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="robolearn", description="Learn robot manipulation policies.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    for name in COMMAND_MODULES:
        importlib.import_module(f"robolearn.commands.{name}").register(sub)
    return parser


def expected_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, ValueError, KeyError, IndexError, ImportError]
    for module, name in EXPECTED_ELSEWHERE:
        found = getattr(sys.modules.get(module), name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            errors.append(found)
    return tuple(errors)


def one_line(err: BaseException) -> str:
    message = err.args[0] if isinstance(err, KeyError) and err.args else err  # KeyError's str() adds quotes
    text = " ".join(str(message).split()) or type(err).__name__
    if isinstance(err, (KeyError, IndexError)):  # raised deep inside: the traceback says where
        text += " (run with --debug for the traceback)"
    return text


def is_ours(err: ImportError) -> bool:
    """An ImportError of robolearn itself is a bug; one of an optional SDK (pyrealsense2, franky, ...) is not."""
    return (err.name or "").split(".")[0] == "robolearn"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    verb = " ".join(part for part in (args.command, getattr(args, "action", None)) if part)
    try:
        return args.func(args)
    except Exception as err:
        if args.debug or not isinstance(err, expected_errors()) or (isinstance(err, ImportError) and is_ours(err)):
            raise
        print(f"robolearn {verb}: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

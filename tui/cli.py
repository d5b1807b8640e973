"""The ``sweepdeck`` command.

With no subcommand it opens the TUI. Subcommands are defined in
``tui/commands/<name>.py``; each module must stay import-light (argparse only
at import time) so that ``sweepdeck --help`` stays fast. Each module provides
``add_parser(subparsers)`` and ``main(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module; the order is the order in --help.
COMMANDS = {
    "run": "tui.commands.run",
    "runs": "tui.commands.runs",
    "results": "tui.commands.results",
    "attach": "tui.commands.attach",
    "diagnose": "tui.commands.diagnose",
    "sim": "tui.commands.sim",
    "alvis": "tui.commands.alvis",
    "tekton": "tui.commands.tekton",
    "argo": "tui.commands.argo",
    "queue": "tui.commands.queue",
    "plan": "tui.commands.plan",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweepdeck",
        description=(
            "Keyboard-driven dashboard for vLLM benchmark experiments. "
            "With no command, opens the full-screen app."
        ),
    )
    add_common(parser)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # not built yet in this checkout
                continue
            raise
        module.add_parser(sub)
    return parser


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every command understands."""
    parser.add_argument("--catalog-dir", metavar="DIR", help="directory with known-models.yaml, workload-presets.yaml, vllm-args.yaml")
    parser.add_argument("--config", metavar="FILE", help="user config file (default: $XDG_CONFIG_HOME/sweepdeck/config.yaml)")


def main(argv: list[str] | None = None) -> int:
    from config.errors import SweepdeckError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.subcommand is None:
            from tui.commands import tui_main

            return tui_main(args)
        module = importlib.import_module(COMMANDS[args.subcommand])
        return int(module.main(args) or 0)
    except SweepdeckError as exc:
        print(f"[ERROR] {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

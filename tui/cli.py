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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(sub)
    parser.epilog = every_command(sub)
    return parser


def every_command(sub: argparse._SubParsersAction) -> str:
    """The epilog of ``sweepdeck --help``: every command and every action of it, from the parsers themselves.

    The list above it shows the commands; commands with actions (``tekton``,
    ``queue``…) list their actions here, so ``tekton run-pr`` and ``tekton
    cancel`` are found from the top-level help.
    """
    lines = ["every command (sweepdeck COMMAND [ACTION] --help for its options):"]
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    for name, parser in sub.choices.items():
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            lines.append(f"  {name:<24}{helps.get(name, '')}")
            continue
        action_helps = {a.dest: a.help or "" for a in actions[0]._choices_actions}
        for action in actions[0].choices:
            lines.append(f"  {name + ' ' + action:<24}{action_helps.get(action, '')}")
    return "\n".join(_wrap(line) for line in lines)


def _wrap(line: str, width: int = 100) -> str:
    import textwrap

    if len(line) <= width:
        return line
    return "\n".join(textwrap.wrap(line, width, subsequent_indent=" " * 26))


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every command understands."""
    parser.add_argument("--catalog-dir", metavar="DIR",
                        help="directory with known-models.yaml, workload-presets.yaml, vllm-args.yaml")
    parser.add_argument("--config", metavar="FILE",
                        help="user config file (default: $XDG_CONFIG_HOME/sweepdeck/config.yaml)")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl+C before a command has its own handling (while the modules load): no traceback
        return 130


def _main(argv: list[str] | None) -> int:
    from config.errors import SweepdeckError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_config(args)
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


def check_config(args: argparse.Namespace) -> None:
    """Read and validate the whole config file before any command runs.

    A misspelt key anywhere in the file (a profile the command does not use,
    ``keys:``) fails every command with the file, the key and what was
    expected — not only the commands that happen to read that part.

    Raises:
        SweepdeckError: the file (``--config``, ``$SWEEPDECK_CONFIG`` or the
            default one) is unreadable or invalid.
    """
    from config.settings import load_settings

    load_settings(getattr(args, "config", None), getattr(args, "catalog_dir", None))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

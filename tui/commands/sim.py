"""``sweepdeck sim``: run the built-in vLLM simulator (see backends/sim).

Every argument after ``sim`` goes to the simulator untouched (its own parser
understands ``vllm serve``'s options and ``--help``), so a job script can
replace ``vllm`` by ``sweepdeck sim``.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run the built-in vLLM simulator (accepts `vllm serve` arguments; sim --help for more)",
        description="Simulated vLLM server. Run `sweepdeck sim --help` for its options.",
        add_help=False,
        # no option prefix: every token (including --help) reaches the simulator's own parser
        prefix_chars="\x00",
    )
    parser.add_argument("sim_argv", nargs="*", metavar="ARGS", help=argparse.SUPPRESS)


def main(args) -> int:
    from backends.sim import main as sim_main

    return sim_main(list(args.sim_argv))

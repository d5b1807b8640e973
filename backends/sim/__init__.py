"""``sweepdeck sim``: a simulated vLLM OpenAI-compatible server.

It stands in for ``vllm serve`` anywhere (job scripts, the local backend, tests,
benchmarks): same command line (unknown vLLM options are ignored with a
warning), same endpoints, same log lines, vLLM's real failure texts on request
(``--fail``), and a simple documented timing model (see
:mod:`backends.sim.engine`). Run ``python -m backends.sim --help``.

Modules: :mod:`~backends.sim.options` (command line), :mod:`~backends.sim.engine`
(timing model, admission, token stream), :mod:`~backends.sim.metrics`
(Prometheus text), :mod:`~backends.sim.failures` (exact failure texts),
:mod:`~backends.sim.server` (ASGI app, startup sequence, uvicorn).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the simulator with a ``vllm serve``-style command line; returns the exit code."""
    from backends.sim.options import SimUsageError, build_parser, parse_args

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        opts = parse_args(argv)
    except SimUsageError as exc:
        parser = build_parser()
        sys.stderr.write(parser.format_usage())
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    import asyncio

    from backends.sim.server import serve

    loop_factory = None
    try:  # uvloop when installed, as `vllm serve` (uvicorn[standard]) does
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(serve(opts))
    except KeyboardInterrupt:
        return 0

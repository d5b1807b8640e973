"""The simulator's app served by uvicorn in this event loop, on a free loopback port (no process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def serving_sim(*args: str) -> AsyncIterator[str]:
    """``async with serving_sim("org/model", "--speed", "0") as url``: the simulator answering at ``url``."""
    import uvicorn

    from backends.sim.engine import Engine
    from backends.sim.options import parse_args
    from backends.sim.server import SimApp

    opts = parse_args(list(args))
    server = uvicorn.Server(uvicorn.Config(SimApp(opts, Engine(opts)), host="127.0.0.1", port=0, log_level="error",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # the server could not start: say why
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def run_workload(profile, results_path, *sim_args: str, model: str = "org/model") -> None:
    """The real load generator against the real simulator, its results written to ``results_path``."""
    from backends.loadgen import WorkloadRunner

    async with serving_sim(model, *sim_args) as url:
        runner = WorkloadRunner(url, model, profile, results_path=results_path, workers=1)
        async for _ in runner.events():
            pass

"""``python -m backends.supervisor RUN_DIR --lifeline-fd N``: the run supervisor process.

Started by :class:`backends.supervisor.launcher.ProcessLauncher` in a session
of its own. It reads ``launch.json`` and ``spec.json`` from the run directory,
builds the backend from its recipe with the run's own cleanup registry, and
serves the run until it ends (see :mod:`backends.supervisor.supervisor`).
Its log (warnings, a traceback if something is badly wrong) goes to
``supervisor.log`` in the run directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backends.supervisor")
    parser.add_argument("run_dir")
    parser.add_argument("--lifeline-fd", type=int, default=None)
    args = parser.parse_args(argv)
    os.umask(0o077)  # everything of the run is private: it names hosts, pids, URLs
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "asyncssh", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # one line per request is not a log
    lifeline = socket.socket(fileno=args.lifeline_fd) if args.lifeline_fd is not None else None
    return asyncio.run(_serve(Path(args.run_dir), lifeline))


async def _serve(path: Path, lifeline: socket.socket | None) -> int:
    from backends.cleanup import REGISTRY
    from backends.registry import from_recipe
    from backends.store import RunDir, RunRecord, RunStore
    from backends.supervisor.supervisor import Supervisor
    from config.errors import SweepdeckError

    run_dir = RunDir(path)
    request = run_dir.read_json("launch.json", {}) or {}
    store = RunStore(Path(request["state_root"])) if request.get("state_root") else RunStore()
    try:
        spec = run_dir.read_spec()
        backend = from_recipe(request.get("recipe") or {}, REGISTRY)
    except (SweepdeckError, OSError, ValueError, KeyError) as exc:
        message = exc.message if isinstance(exc, SweepdeckError) else f"cannot read the launch request: {exc}"
        logging.error("%s", message)
        return await _refuse(run_dir, lifeline, message)
    adopt = RunRecord(run_dir.id, path, run_dir.meta()) if request.get("adopt") else None
    supervisor = Supervisor(run_dir, backend, spec, store=store, registry=REGISTRY, lifeline=lifeline, adopt=adopt,
                            default_image=request.get("default_image"))
    supervisor.install_signals()
    result = await supervisor.serve()
    logging.info("run %s: supervisor done: %s %s", run_dir.id, result.outcome, result.message)
    return 0 if result.outcome in ("succeeded", "detached") else 1


async def _refuse(run_dir, lifeline: socket.socket | None, message: str) -> int:
    """The backend cannot even be built: record it and tell the client."""
    from backends.events import Finished
    from backends.store import StoreWriteError
    from backends.supervisor.protocol import encode

    try:
        run_dir.append_event(Finished("failed", message))
        run_dir.update_meta(state="failed", finished=time.time(), message=message)
    except StoreWriteError:
        pass
    run_dir.close()
    if lifeline is not None:
        try:
            lifeline.sendall(encode({"type": "_launch_failed", "message": message, "hint": ""}))
            lifeline.sendall(encode({"type": "_result", "outcome": "failed", "message": message}))
        except OSError:
            pass
        lifeline.close()
    return 1


if __name__ == "__main__":  # pragma: no cover - the supervisor process
    sys.exit(main())

"""``sweepdeck queue``: the Argo work-queue service and its reference worker."""

from __future__ import annotations

import argparse
import json

#: Rows per listing request of `queue report` (the API allows at most 10,000 configs a page).
PAGE_SIZE = 10_000


def add_parser(sub) -> None:
    p = sub.add_parser("queue", help="the database-backed work queue (serve, populate, progress, reset-stale, "
                                     "populate-remote, report, worker)")
    qs = p.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    def db(parser):
        parser.add_argument("--db", help="database URL: sqlite:///PATH (default: the XDG data dir) or postgresql+asyncpg://USER@HOST:PORT/DB")

    s = qs.add_parser("serve", help="serve the HTTP API (OpenAPI at /docs)")
    db(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8080,
                   help="port to listen on (default 8080, an argo profile's queue_url)")
    s.add_argument("--claim-concurrency", type=int, default=4, metavar="N",
                   help="PostgreSQL: claim transactions let into the database at once (more claimers wait; "
                        "about the database server's core count is fastest; 0: no limit)")

    pop = qs.add_parser("populate", help="create the config matrix for a model version")
    db(pop)
    pop.add_argument("model_version_id", metavar="MVID")
    pop.add_argument("--dry-run", action="store_true", help="print the expected count and its breakdown only")
    pop.add_argument("--hardware", help="comma-separated hardware configs (GPU:count)")
    pop.add_argument("--frameworks", help="comma-separated frameworks")
    pop.add_argument("--workloads", help="comma-separated workload types")
    pop.add_argument("--batch-sizes", help="comma-separated integers (default 1,2,4,8)")
    pop.add_argument("--sequence-lengths", help="comma-separated integers (default 1024,2048,4096)")

    pr = qs.add_parser("progress", help="progress of a model version")
    db(pr)
    pr.add_argument("model_version_id", metavar="MVID")
    pr.add_argument("--json", action="store_true")

    rs = qs.add_parser("reset-stale", help="return configs running too long to pending (spot recovery)")
    db(rs)
    rs.add_argument("--timeout-minutes", type=float, default=120)
    rs.add_argument("--max-retries", type=int, default=3)

    pr2 = qs.add_parser("populate-remote", help="populate through the queue API (the workflow's first step)")
    pr2.add_argument("--api-url", required=True)
    pr2.add_argument("model_version_id", metavar="MVID")
    pr2.add_argument("--dry-run", action="store_true")

    rep = qs.add_parser("report", help="aggregate and rank a model version's results (the workflow's last step)")
    rep.add_argument("--api-url", required=True)
    rep.add_argument("model_version_id", metavar="MVID")
    rep.add_argument("--metric", default="output_tokens_per_s", help="result metric to rank by (higher is better)")
    rep.add_argument("--top", type=int, default=20)
    rep.add_argument("--page-size", type=int, default=PAGE_SIZE, help=f"configs/results per API request (1-10000, default {PAGE_SIZE})")

    w = qs.add_parser("worker", help="claim and run configs until the queue is empty")
    w.add_argument("--api-url", required=True, help="queue API base URL, e.g. http://queue:8080")
    w.add_argument("--batch-size", type=int, default=100)
    w.add_argument("--model-version-id", help="only this model version")
    w.add_argument("--priority-threshold", type=int)
    w.add_argument("--endpoint", help="OpenAI-compatible server to run each config against")
    w.add_argument("--model", help="model name at the endpoint")
    w.add_argument("--command", help="command template run per config, e.g. 'bench --bs {batch_size}'")
    w.add_argument("--max-requests", type=int, help="requests per config with --endpoint")


def _csv(text: str | None, cast=str):
    if text is None:
        return None
    from config.errors import SweepdeckError

    try:
        values = tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise SweepdeckError(f"Cannot read {text!r} as a comma-separated list of {cast.__name__}s.") from None
    return values


def main(args: argparse.Namespace) -> int:
    import asyncio

    action = args.queue_command
    if action == "serve":
        return _serve(args)
    if action == "worker":
        return asyncio.run(_worker(args))
    if action in ("populate-remote", "report"):
        return _remote(args)
    return asyncio.run(_db_action(args))


def _store(args, **options):
    from backends.queue.store import QueueStore, default_db_url

    return QueueStore(args.db or default_db_url(), **options)


async def _db_action(args) -> int:
    from backends.queue.store import Matrix

    store = _store(args)
    try:
        await store.create()
        if args.queue_command == "populate":
            m = Matrix()
            for name, cast in (("hardware", str), ("frameworks", str), ("workloads", str), ("batch_sizes", int), ("sequence_lengths", int)):
                values = _csv(getattr(args, name), cast)
                if values is not None:
                    setattr(m, name, values)
            info = await store.populate(args.model_version_id, m, dry_run=args.dry_run)
            print("Benchmark Matrix Population")
            print(f"Model Version ID: {args.model_version_id}")
            print(f"Hardware Configs: {info['hardware_configs']}")
            print(f"Frameworks: {info['frameworks']}")
            print(f"Workloads: {info['workloads']}")
            print(f"Batch Sizes: {info['batch_sizes']}")
            print(f"Sequence Lengths: {info['sequence_lengths']}")
            print(f"Expected Total: {info['total']:,} configs")
            if args.dry_run:
                print("(dry run: nothing written)")
            else:
                print(f"✓ Created {info['created']:,} benchmark configurations ({info['existing']:,} already existed).")
        elif args.queue_command == "progress":
            p = await store.progress(args.model_version_id)
            if args.json:
                print(json.dumps(p))
            else:
                print(f"{p['model_version_id']}: {p['completed'] + p['failed']:,}/{p['total']:,} ({p['progress_pct']:.2f}%)  "
                      f"pending {p['pending']:,} · running {p['running']:,} · completed {p['completed']:,} · failed {p['failed']:,}")
        elif args.queue_command == "reset-stale":
            r = await store.reset_stale(args.timeout_minutes, args.max_retries)
            print(f"[INFO] reset {r['reset']} stale configs to pending; {r['failed']} failed after {args.max_retries} retries")
    finally:
        await store.close()
    return 0


def _serve(args) -> int:
    import uvicorn

    from backends.queue.api import create_app

    if args.claim_concurrency < 0:
        from config.errors import SweepdeckError

        raise SweepdeckError(f"--claim-concurrency must be 0 or more, got {args.claim_concurrency}.")
    app = create_app(_store(args, claim_concurrency=args.claim_concurrency or None))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


async def _worker(args) -> int:
    import asyncio
    import signal

    from backends.queue.worker import QueueWorker

    worker = QueueWorker(
        api_url=args.api_url,
        batch_size=args.batch_size,
        model_version_id=args.model_version_id,
        priority_threshold=args.priority_threshold,
        endpoint=args.endpoint,
        model=args.model,
        command=args.command,
        max_requests=args.max_requests,
        on_log=lambda line: print(line, flush=True),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, worker.stop)
    counts = await worker.run()
    print(f"[INFO] worker finished: {counts['completed']} completed, {counts['failed']} failed, {counts['released']} returned to pending", flush=True)
    return 0


def _remote(args) -> int:
    """The workflow's populate and finalize steps, through the HTTP API."""
    import httpx

    from config.errors import SweepdeckError

    base = args.api_url.rstrip("/") + "/api/v1/workflow"
    try:
        with httpx.Client(timeout=120) as client:
            if args.queue_command == "populate-remote":
                r = client.post(f"{base}/populate/{args.model_version_id}", params={"dry_run": args.dry_run})
                r.raise_for_status()
                info = r.json()
                print(f"Expected Total: {info['total']:,} configs; created {info['created']:,}, existing {info['existing']:,}")
                return 0
            if not 1 <= args.page_size <= 10_000:
                raise SweepdeckError(f"--page-size must be 1-10000, got {args.page_size}.")
            r = client.get(f"{base}/progress/{args.model_version_id}")
            r.raise_for_status()
            progress = r.json()
            configs = {c["id"]: c for c in _pages(client, f"{base}/configs/{args.model_version_id}", args.page_size)}
            results = list(_pages(client, f"{base}/results/{args.model_version_id}", args.page_size))
    except httpx.HTTPError as exc:
        raise SweepdeckError(f"Queue API at {args.api_url} failed: {exc}.") from None
    print(f"{progress['completed']:,} completed, {progress['failed']:,} failed of {progress['total']:,} ({progress['progress_pct']:.2f}%)")
    print(ranking(configs, results, args.metric, args.top))
    return 0


def _pages(client, url: str, size: int):
    """Every row of a listing endpoint, ``size`` at a time (``limit``/``offset``) until a short page."""
    offset = 0
    while True:
        r = client.get(url, params={"limit": size, "offset": offset})
        r.raise_for_status()
        page = r.json()
        yield from page
        if len(page) < size:
            return
        offset += size


def ranking(configs: dict, results: list, metric: str, top: int) -> str:
    """Mean of ``metric`` per hardware × framework × workload, best first, as text lines."""
    groups: dict[tuple, list[float]] = {}
    for res in results:
        cfg = configs.get(res.get("config_id"))
        value = (res.get("metrics") or {}).get(metric)
        if cfg is None or not isinstance(value, (int, float)):
            continue
        key = (cfg["hardware_config_id"], cfg["framework_id"], cfg["workload_type"])
        groups.setdefault(key, []).append(float(value))
    if not groups:
        return f"(no results with metric {metric!r})"
    rows = sorted(((sum(v) / len(v), k, len(v)) for k, v in groups.items()), reverse=True)[:top]
    lines = [f"{'rank':>4}  {'hardware':>8}  {'framework':>9}  {'workload':<17} {metric:>22}  n"]
    for i, (mean, (hw, fw, wl), n) in enumerate(rows, 1):
        lines.append(f"{i:>4}  {hw:>8}  {fw:>9}  {wl:<17} {mean:>22.2f}  {n}")
    return "\n".join(lines)

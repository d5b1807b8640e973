"""``sweepdeck queue``: the Argo work-queue service and its reference worker."""

from __future__ import annotations

import argparse
import json
from typing import Any

#: Rows per listing request of `queue report` (the API allows at most 10,000 configs a page).
PAGE_SIZE = 10_000


def add_parser(sub) -> None:
    p = sub.add_parser(
        "queue", help="the database-backed work queue (serve, populate, progress, reset-stale, worker, history)"
    )
    qs = p.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    def db(parser):
        parser.add_argument(
            "--db",
            help="database URL: sqlite:///PATH (default: the XDG data dir) or postgresql+asyncpg://USER@HOST:PORT/DB",
        )

    def token(parser, role: str):
        parser.add_argument(
            "--token-file",
            metavar="FILE",
            help=f"token to send: a file of NAME ROLE TOKEN lines (its {role} token is used) or holding "
            "one bare token (default: $SWEEPDECK_QUEUE_TOKEN, else the file `queue serve` generates)",
        )

    s = qs.add_parser("serve", help="serve the HTTP API (OpenAPI at /docs); bearer tokens required")
    db(s)
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; "
        "any other address needs --token-file or $SWEEPDECK_QUEUE_TOKEN)",
    )
    s.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: a free one)")
    s.add_argument(
        "--token-file",
        metavar="FILE",
        help="the tokens to accept: lines NAME ROLE TOKEN, roles worker/admin (default: "
        "$SWEEPDECK_QUEUE_TOKEN as one admin token; on loopback only, a generated file, mode 0600)",
    )
    s.add_argument(
        "--public-progress", action="store_true", help="answer GET progress and rate (counts only) without a token"
    )
    s.add_argument(
        "--max-body-bytes",
        type=int,
        default=1024 * 1024,
        metavar="N",
        help="larger request bodies are refused with 413 (default 1 MiB)",
    )
    s.add_argument(
        "--lease-minutes",
        type=float,
        default=10.0,
        metavar="MIN",
        help="a claimed config stays the claimer's this long after its claim or last heartbeat (default 10)",
    )
    s.add_argument(
        "--claim-concurrency",
        type=int,
        default=4,
        metavar="N",
        help="PostgreSQL: claim transactions let into the database at once (more claimers wait; "
        "about the database server's core count is fastest; 0: no limit)",
    )

    t = qs.add_parser(
        "tokens", help="make (if missing) and show the queue's token file: names and roles, never the tokens"
    )
    t.add_argument("--token-file", metavar="FILE", help="the file (default: the one `queue serve` uses on loopback)")
    t.add_argument(
        "--print",
        dest="print_role",
        choices=("worker", "admin"),
        help="print that role's token alone on stdout (for a Kubernetes Secret or another machine)",
    )

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

    rs = qs.add_parser(
        "reset-stale", help="return stale running configs to pending, revoking their leases (spot recovery)"
    )
    db(rs)
    rs.add_argument("--api-url", help="do it through the queue API (admin token) instead of the database")
    token(rs, "admin")
    rs.add_argument("--timeout-minutes", type=float, default=120)
    rs.add_argument("--max-retries", type=int, default=3)

    hi = qs.add_parser(
        "history", help="a config's state changes: who (token name), when, under which lease; its results"
    )
    db(hi)
    hi.add_argument("config_id", metavar="CONFIG", type=int, help="config id")
    hi.add_argument("--api-url", help="read it through the queue API (admin token) instead of the database")
    token(hi, "admin")
    hi.add_argument("--json", action="store_true")

    pr2 = qs.add_parser("populate-remote", help="populate through the queue API (the workflow's first step)")
    pr2.add_argument("--api-url", required=True)
    token(pr2, "admin")
    pr2.add_argument("model_version_id", metavar="MVID")
    pr2.add_argument("--dry-run", action="store_true")

    rep = qs.add_parser("report", help="aggregate and rank a model version's results (the workflow's last step)")
    rep.add_argument("--api-url", required=True)
    token(rep, "admin")
    rep.add_argument("model_version_id", metavar="MVID")
    rep.add_argument("--metric", default="output_tokens_per_s", help="result metric to rank by (higher is better)")
    rep.add_argument("--top", type=int, default=20)
    rep.add_argument(
        "--page-size",
        type=int,
        default=PAGE_SIZE,
        help=f"configs/results per API request (1-10000, default {PAGE_SIZE})",
    )

    w = qs.add_parser("worker", help="claim and run configs until the queue is empty")
    w.add_argument("--api-url", required=True, help="queue API base URL, e.g. http://queue:8080")
    token(w, "worker")
    w.add_argument("--batch-size", type=int, default=100)
    w.add_argument("--model-version-id", help="only this model version")
    w.add_argument("--priority-threshold", type=int)
    w.add_argument("--endpoint", help="OpenAI-compatible server to run each config against")
    w.add_argument("--model", help="model name at the endpoint")
    w.add_argument(
        "--command",
        help="command template run per config, e.g. 'bench --bs {batch_size}' "
        "(no shell; a value may not become an option unless after a literal --)",
    )
    w.add_argument("--max-requests", type=int, help="requests per config with --endpoint")

    sh = qs.add_parser(
        "spot-handler", help="print the spot-recovery manifests (Argo CronWorkflow + Kubernetes CronJob)"
    )
    sh.add_argument(
        "--argo-version",
        default="4",
        metavar="V",
        help="Argo Workflows version of the cluster (3.5 writes `schedule`, 3.6 and later `schedules`; default 4)",
    )
    sh.add_argument("--api-url", default="http://sweepdeck-queue:8080", help="the queue API as the cluster reaches it")
    sh.add_argument("--token-secret", default="sweepdeck-queue-token", help="Secret holding the admin-token key")
    sh.add_argument("--image", default="sweepdeck:latest")
    sh.add_argument("--timeout-minutes", type=float, default=120)
    sh.add_argument("-n", "--namespace", help="metadata.namespace of both objects")


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
    if action == "tokens":
        return _tokens(args)
    if action == "worker":
        return asyncio.run(_worker(args))
    if action == "spot-handler":
        return _spot_handler(args)
    if action in ("populate-remote", "report") or (action in ("reset-stale", "history") and args.api_url):
        return _remote(args)
    return asyncio.run(_db_action(args))


def _store(args, **options):
    from backends.queue.store import QueueStore, default_db_url

    return QueueStore(args.db or default_db_url(), **options)


def _local_actor() -> str:
    """Who a change made straight on the database is recorded as (no token: the OS user)."""
    import getpass

    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local"


async def _db_action(args) -> int:
    store = _store(args)
    try:
        await store.create()
        if args.queue_command == "populate":
            await _populate(store, args)
        elif args.queue_command == "progress":
            p = await store.progress(args.model_version_id)
            print(json.dumps(p) if args.json else _progress_line(p))
        elif args.queue_command == "reset-stale":
            r = await store.reset_stale(args.timeout_minutes, args.max_retries, actor=_local_actor())
            print(_reset_line(r, args.max_retries))
        elif args.queue_command == "history":
            h = await store.history(args.config_id)
            print(json.dumps(h) if args.json else history_text(h))
    finally:
        await store.close()
    return 0


async def _populate(store, args) -> None:
    from backends.queue.store import Matrix

    m = Matrix()
    for name, cast in (
        ("hardware", str),
        ("frameworks", str),
        ("workloads", str),
        ("batch_sizes", int),
        ("sequence_lengths", int),
    ):
        values = _csv(getattr(args, name), cast)
        if values is not None:
            setattr(m, name, values)
    info = await store.populate(args.model_version_id, m, dry_run=args.dry_run, actor=_local_actor())
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


def _progress_line(p: dict) -> str:
    return (
        f"{p['model_version_id']}: {p['completed'] + p['failed']:,}/{p['total']:,} ({p['progress_pct']:.2f}%)  "
        f"pending {p['pending']:,} · running {p['running']:,} · completed {p['completed']:,} · failed {p['failed']:,}"
    )


def _reset_line(r: dict, max_retries: int) -> str:
    return (
        f"[INFO] reset {r['reset']} stale configs to pending; {r['failed']} failed after {max_retries} retries "
        "(their leases are revoked)"
    )


def history_text(h: dict) -> str:
    """``queue history``: the config, then one line per state change and per result."""
    c = h["config"]
    lines = [
        f"config {c['id']} of {c['model_version_id']}: {c['workload_type']}, batch {c['batch_size']}, "
        f"seq {c['sequence_length']}, priority {c['priority']} — {c['status']}"
        + (f" ({c['error_message']})" if c.get("error_message") else "")
        + f", retries {c['retry_count']}",
        f"  {c['created_at']}  populated by {c.get('created_by') or '(unknown)'}",
    ]
    for e in h["events"]:
        move = f"{e['from_status']} → {e['to_status']}" if e.get("to_status") else ""
        lease = f"  lease {e['lease_id'][:8]}…" if e.get("lease_id") else ""
        detail = f"  ({e['detail']})" if e.get("detail") else ""
        lines.append(f"  {e['at']}  {e['action']:<11} by {e['actor']:<16} {move}{lease}{detail}".rstrip())
    for r in h["results"]:
        lease = f" under lease {r['lease_id'][:8]}…" if r.get("lease_id") else ""
        lines.append(
            f"  result {r['id']}{lease} by {r.get('created_by') or '(unknown)'}: {json.dumps(r['metrics'])[:200]}"
        )
    if not h["results"]:
        lines.append("  no result")
    return "\n".join(lines)


def _serve(args) -> int:
    import uvicorn

    from backends.queue.api import create_app
    from backends.queue.auth import server_tokens
    from config.errors import SweepdeckError

    if args.claim_concurrency < 0:
        raise SweepdeckError(f"--claim-concurrency must be 0 or more, got {args.claim_concurrency}.")
    if args.max_body_bytes < 1024:
        raise SweepdeckError(f"--max-body-bytes must be at least 1024, got {args.max_body_bytes}.")
    if not 1 / 60 <= args.lease_minutes <= 7 * 24 * 60:
        raise SweepdeckError(
            f"--lease-minutes must be from 1 s (0.0167) to 7 days (10080), got {args.lease_minutes:g}."
        )
    tokens, where = server_tokens(args.token_file, args.host)
    store = _store(args, claim_concurrency=args.claim_concurrency or None, lease_seconds=args.lease_minutes * 60)
    app = create_app(store, tokens, public_progress=args.public_progress, max_body_bytes=args.max_body_bytes)
    print(f"[INFO] queue {where}", flush=True)
    if args.public_progress:
        print("[INFO] progress and rate are readable without a token (--public-progress)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _tokens(args) -> int:
    from backends.queue.auth import default_token_path, ensure_token_file

    path, entries, created = ensure_token_file(args.token_file or default_token_path())
    if args.print_role:
        from backends.queue.auth import pick_token

        print(pick_token(entries, args.print_role, path, bare_ok=False))
        return 0
    print(f"{path} ({'generated now' if created else 'existing'}; keep it private, mode 0600)")
    for name, role, _token in entries:
        print(f"  {name:<20} {role}")
    print(f"Serve with it: sweepdeck queue serve --token-file {path}")
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
        token_file=args.token_file,
        on_log=lambda line: print(line, flush=True),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, worker.stop)
    counts = await worker.run()
    line = (
        f"[INFO] worker finished: {counts['completed']} completed, {counts['failed']} failed, "
        f"{counts['released']} returned to pending"
    )
    if counts["reassigned"]:
        line += f", {counts['reassigned']} reassigned to other workers (dropped)"
    print(line, flush=True)
    return 0


def _spot_handler(args) -> int:
    from backends.argo.spot import spot_handler_manifests
    from backends.argo.workflow import yaml_dump_all

    docs = spot_handler_manifests(
        args.argo_version,
        api_base_url=args.api_url,
        token_secret=args.token_secret,
        image=args.image,
        timeout_minutes=args.timeout_minutes,
        namespace=args.namespace,
    )
    print(yaml_dump_all(docs), end="")
    return 0


def _remote(args) -> int:
    """The workflow's populate and finalize steps, and reset-stale/history, through the HTTP API."""
    import httpx

    from backends.queue.auth import client_token
    from config.errors import SweepdeckError

    base = args.api_url.rstrip("/") + "/api/v1/workflow"
    token = client_token("admin", args.token_file)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(timeout=120, headers=headers) as client:
            if args.queue_command == "populate-remote":
                info = _checked(
                    client.post(f"{base}/populate/{args.model_version_id}", params={"dry_run": args.dry_run})
                )
                print(f"Expected Total: {info['total']:,} configs; created {info['created']:,}, "
                      f"existing {info['existing']:,}")
                return 0
            if args.queue_command == "reset-stale":
                r = _checked(
                    client.post(
                        f"{base}/maintenance/reset-stale",
                        params={"timeout_minutes": args.timeout_minutes, "max_retries": args.max_retries},
                    )
                )
                print(_reset_line(r, args.max_retries))
                return 0
            if args.queue_command == "history":
                h = _checked(client.get(f"{base}/configs/{args.config_id}/history"))
                print(json.dumps(h) if args.json else history_text(h))
                return 0
            if not 1 <= args.page_size <= 10_000:
                raise SweepdeckError(f"--page-size must be 1-10000, got {args.page_size}.")
            progress = _checked(client.get(f"{base}/progress/{args.model_version_id}"))
            configs = {c["id"]: c for c in _pages(client, f"{base}/configs/{args.model_version_id}", args.page_size)}
            results = list(_pages(client, f"{base}/results/{args.model_version_id}", args.page_size))
    except httpx.HTTPError as exc:
        raise SweepdeckError(f"Queue API at {args.api_url} failed: {exc}.") from None
    print(
        f"{progress['completed']:,} completed, {progress['failed']:,} failed of {progress['total']:,} "
        f"({progress['progress_pct']:.2f}%)"
    )
    print(ranking(configs, results, args.metric, args.top))
    return 0


def _checked(resp) -> Any:
    """The JSON of a 2xx answer; an error answer as one readable line (401/403 say which token to give)."""
    from config.errors import SweepdeckError

    if resp.status_code < 400:
        return resp.json()
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    hint = (
        "Give an admin token of this queue: --token-file FILE or $SWEEPDECK_QUEUE_TOKEN."
        if resp.status_code in (401, 403)
        else ""
    )
    error = SweepdeckError(f"{resp.request.method} {resp.request.url.path} → HTTP {resp.status_code}: {detail}", hint)
    error.exit_code = 1
    raise error


def _pages(client, url: str, size: int):
    """Every row of a listing endpoint, ``size`` at a time (``limit``/``offset``) until a short page."""
    offset = 0
    while True:
        page = _checked(client.get(url, params={"limit": size, "offset": offset}))
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

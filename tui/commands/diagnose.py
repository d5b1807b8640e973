"""``sweepdeck diagnose FILE…``: what went wrong in a saved vLLM, pod or job log, and how to fix it.

For a run sweepdeck did not launch (a colleague's log, a ``kubectl logs``
dump, a SLURM ``vllm.err``): the same rule table the live runs use reads the
log with context (vLLM's start-up settings and phase, the root cause above
"see root cause above") and prints the diagnosis, the line that shows it and
the concrete fixes. Import-light: the rule table is imported inside ``main``.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

EPILOG = """\
examples:
  sweepdeck diagnose vllm.err
  kubectl logs pod/vllm-0 > pod.log; sweepdeck diagnose pod.log
  sweepdeck diagnose --json slurm-5382685.out vllm.err.gz
  journalctl -u vllm | sweepdeck diagnose -

exit codes: 0 every file was read (whether or not a failure was found), 2 a file could not be read.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "diagnose",
        help="explain a saved vLLM / pod / job log: the failure, the line that shows it, and the fixes",
        description="Read saved logs (vLLM server output, kubectl logs or describe, SLURM job output) and print "
                    "the failure each one shows, its evidence line and concrete fixes. '-' reads standard input; "
                    "files ending in .gz are read uncompressed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="log file(s) to read ('-' for standard input)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per file: file, rule, title, message, evidence, line, fixes, also")


def main(args: argparse.Namespace) -> int:
    status = 0
    for name in args.files:
        try:
            result = diagnose_file(name)
        except _Unreadable as exc:
            print(f"[ERROR] {exc}", file=sys.stderr, flush=True)
            status = 2
            continue
        if args.json:
            import json

            print(json.dumps(result), flush=True)
        else:
            print_result(result, sys.stdout)
    return status


class _Unreadable(Exception):
    """A file that cannot be read; its message is the one line the user sees."""


def _open(name: str) -> IO[str]:
    if name == "-":
        return sys.stdin
    import gzip
    import os

    if os.path.isdir(name):
        raise _Unreadable(f"{name}: is a directory, not a log file.")
    try:
        if name.endswith(".gz"):
            return gzip.open(name, "rt", encoding="utf-8", errors="replace")
        return open(name, encoding="utf-8", errors="replace")  # closed by diagnose_file
    except FileNotFoundError:
        raise _Unreadable(f"{name}: no such file.") from None
    except OSError as exc:
        raise _Unreadable(f"{name}: cannot read it ({exc.strerror or exc}).") from None


def diagnose_file(name: str) -> dict[str, Any]:
    """The diagnosis of one log file as a plain dict (``rule`` None when nothing is recognised).

    Raises:
        _Unreadable: the file is missing, a directory, unreadable or not gzip.
    """
    from backends.diagnosis import ENGINE_DEAD, LogDiagnoser, primary, remedies

    reader = LogDiagnoser()
    stream = _open(name)
    try:
        found = reader.read(line.rstrip("\r\n") for line in stream)
    except (OSError, EOFError) as exc:  # a truncated or fake .gz, an I/O error half-way
        raise _Unreadable(f"{name}: cannot read it ({exc}).") from None
    finally:
        if stream is not sys.stdin:
            stream.close()
    best = primary(found)
    if best is None:
        last = reader.last_exception
        return {"file": name, "rule": None, "title": None, "message": None,
                "evidence": last[1] if last else "", "line": last[0] if last else None,
                "fixes": [], "also": [], "lines_read": reader.line_no}
    line = best.facts.get("root_cause_line") if best.rule_id == ENGINE_DEAD else None
    return {
        "file": name,
        "rule": best.rule_id,
        "title": best.title,
        "message": best.message,
        "evidence": best.evidence,
        "line": line or best.facts.get("line"),
        "fixes": remedies(best),
        "also": [d.rule_id for d in found if d is not best],
        "lines_read": reader.line_no,
    }


def print_result(result: dict[str, Any], out: IO[str]) -> None:
    name = result["file"]
    if result["rule"] is None:
        out.write(f"{name}: no known failure found ({result['lines_read']} lines read).\n")
        if result["evidence"]:
            out.write(f"  last error line ({result['line']}): {result['evidence']}\n")
        out.flush()
        return
    out.write(f"{name}: {result['title']}\n")
    out.write(f"  {result['message']}\n")
    where = f" (line {result['line']})" if result.get("line") else ""
    evidence = result["evidence"] if len(result["evidence"]) <= 300 else result["evidence"][:299] + "…"
    out.write(f"  evidence{where}: {evidence}\n")
    if result["fixes"]:
        out.write("  fixes:\n")
        for n, fix in enumerate(result["fixes"], 1):
            out.write(f"    {n}. {fix}\n")
    if result["also"]:
        out.write(f"  also in the log: {', '.join(result['also'])}\n")
    out.flush()

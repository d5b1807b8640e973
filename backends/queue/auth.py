"""Bearer tokens of the work-queue API: who may call it, and as what.

Two roles. A *worker* token may claim configs, heartbeat its leases and report
status and results; an *admin* token may also populate, reset stale configs and
read progress, listings and history (admin includes worker). Every state change
is recorded under the calling token's *name*, never the token itself.

A token file holds one token per line as ``NAME ROLE TOKEN``; ``#`` starts a
comment. A file holding a single bare token (a Kubernetes Secret key mounted as
a file) is that one token: role admin, name ``admin`` (for the server), or
simply the token to send (for a client).

``queue serve`` takes its tokens from ``--token-file``, else from
``SWEEPDECK_QUEUE_TOKEN`` (one admin token), else — on a loopback address only —
from :func:`default_token_path`, generated there (mode 0600) on first use.
Clients (the worker, the sweep view, ``populate-remote``/``report``) send the
token of ``--token-file``, else ``SWEEPDECK_QUEUE_TOKEN``, else the default file's.

Presented tokens are compared by their SHA-256 digests with
:func:`hmac.compare_digest` against every known token (no early exit), so the
time taken says nothing about how much of a token was right.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from config.errors import SweepdeckError

ROLES = ("worker", "admin")
TOKEN_ENV = "SWEEPDECK_QUEUE_TOKEN"
#: Visible ASCII a header value can carry; at least 16 characters (generated ones have 43).
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,512}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's name (recorded in the audit) and role."""

    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class _Entry:
    name: str
    role: str
    digest: bytes


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenSet:
    """The tokens a server accepts (kept as digests only).

    Args:
        entries: ``(name, role, token)`` triples; names and tokens must be distinct.
    """

    def __init__(self, entries: list[tuple[str, str, str]]) -> None:
        if not entries:
            raise SweepdeckError("No queue tokens given.", "Give at least one NAME ROLE TOKEN line.")
        names = [n for n, _, _ in entries]
        if len(set(names)) != len(names):
            raise SweepdeckError(
                "Two queue tokens share a name.", "Give every token its own name (it is what the audit records)."
            )
        if len({t for _, _, t in entries}) != len(entries):
            raise SweepdeckError("The same queue token is listed twice.", "Give every name its own token.")
        self._entries = [_Entry(n, r, _digest(t)) for n, r, t in entries]

    @property
    def roles(self) -> dict[str, str]:
        """``{name: role}`` (what ``queue serve`` prints: never the tokens)."""
        return {e.name: e.role for e in self._entries}

    def authenticate(self, presented: str | None) -> Principal | None:
        """The caller a presented token belongs to, or None; constant time over all tokens."""
        if not presented:
            return None
        given = _digest(presented)
        found: _Entry | None = None
        for entry in self._entries:  # no break: every entry costs the same
            if hmac.compare_digest(given, entry.digest):
                found = entry
        return Principal(found.name, found.role) if found else None


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def default_token_path() -> Path:
    """Where ``queue serve`` keeps the tokens it generates (next to the default database)."""
    from platformdirs import user_data_path

    return user_data_path("sweepdeck") / "queue-tokens"


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``)?"""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def parse_token_file(text: str, path: str | Path) -> list[tuple[str, str, str]]:
    """``(name, role, token)`` entries of a token file (see module docs).

    Raises:
        SweepdeckError: a malformed line, naming the file and line.
    """
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if len(lines) == 1 and len(lines[0][1].split()) == 1:
        token = lines[0][1]
        _check_token(token, path, lines[0][0])
        return [("admin", "admin", token)]
    entries = []
    for n, line in lines:
        parts = line.split()
        if len(parts) != 3:
            raise SweepdeckError(
                f"{path}:{n}: expected NAME ROLE TOKEN, got {len(parts)} field(s).",
                "One token per line, e.g. `ci-workers worker <token>`; roles: worker, admin.",
            )
        name, role, token = parts
        if not _NAME_RE.match(name):
            raise SweepdeckError(
                f"{path}:{n}: token name {name!r} is not usable.",
                "Use letters, digits and . _ @ : - (at most 100 characters).",
            )
        if role not in ROLES:
            raise SweepdeckError(f"{path}:{n}: role {role!r} is not one of {', '.join(ROLES)}.")
        _check_token(token, path, n)
        entries.append((name, role, token))
    if not entries:
        raise SweepdeckError(
            f"{path} holds no token.", "Add a line NAME ROLE TOKEN, or remove the file to have one generated."
        )
    return entries


def _check_token(token: str, path: str | Path, line: int) -> None:
    if not _TOKEN_RE.match(token):
        # never echo the token: the message may end up in a log
        raise SweepdeckError(
            f"{path}:{line}: the token is not usable (16-512 characters of A-Z a-z 0-9 . _ ~ + / = -).",
            "Generate one with `sweepdeck queue tokens --token-file PATH`.",
        )


def read_token_file(path: str | Path) -> list[tuple[str, str, str]]:
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepdeckError(
            f"Token file {p} does not exist.", "Create it with `sweepdeck queue tokens --token-file PATH`."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepdeckError(f"Cannot read token file {p}: {getattr(exc, 'strerror', None) or exc}.") from None
    return parse_token_file(text, p)


def write_token_file(path: str | Path, entries: list[tuple[str, str, str]]) -> Path:
    """Create a token file readable by its owner only (0600); refuses to overwrite one."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    body = "# sweepdeck work-queue tokens: NAME ROLE TOKEN (roles: worker, admin). Keep this file private.\n"
    body += "".join(f"{n} {r} {t}\n" for n, r, t in entries)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SweepdeckError(f"Token file {p} already exists.", "Use it, or remove it first.") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body)
    os.chmod(p, 0o600)  # the umask cannot widen it, but make it explicit
    return p


def ensure_token_file(path: str | Path) -> tuple[Path, list[tuple[str, str, str]], bool]:
    """The token file at ``path``, generated (an admin and a worker token) if missing.

    Returns:
        ``(path, entries, created)``.
    """
    p = Path(path).expanduser()
    if p.exists():
        return p, read_token_file(p), False
    entries = [("admin", "admin", new_token()), ("worker", "worker", new_token())]
    try:
        write_token_file(p, entries)
    except SweepdeckError:  # another process made it first
        return p, read_token_file(p), False
    return p, entries, True


def server_tokens(token_file: str | None, host: str) -> tuple[TokenSet, str]:
    """The tokens ``queue serve`` accepts, and a line saying where they come from.

    Raises:
        SweepdeckError: a non-loopback address and no token given, or a bad token file.
    """
    if token_file:
        return TokenSet(read_token_file(token_file)), f"tokens from {Path(token_file).expanduser()}"
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        _check_token(env, TOKEN_ENV, 1)
        return TokenSet([("admin", "admin", env)]), f"one admin token from ${TOKEN_ENV}"
    if not is_loopback(host):
        raise SweepdeckError(
            f"Refusing to serve the work queue on {host} without a token: anyone who can reach it could "
            "populate, claim, complete or reset configs.",
            f"Give --token-file FILE (lines NAME ROLE TOKEN; `sweepdeck queue tokens --token-file FILE` makes one) "
            f"or set {TOKEN_ENV}, or serve on 127.0.0.1.",
        )
    path, entries, created = ensure_token_file(default_token_path())
    how = "generated" if created else "existing"
    return TokenSet(entries), f"tokens ({', '.join(f'{n}: {r}' for n, r, _ in entries)}) in {path} ({how}, mode 0600)"


def client_token(role: str = "worker", token_file: str | None = None) -> str | None:
    """The token a client sends for ``role`` (see module docs), or None when there is none.

    From a NAME ROLE TOKEN file the token of that role is taken (for ``worker``,
    an admin token when the file has no worker token).

    Raises:
        SweepdeckError: ``token_file`` given but unreadable, malformed or without a usable token.
    """
    if token_file:
        return pick_token(read_token_file(token_file), role, token_file, bare_ok=True)
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    path = default_token_path()
    if not path.exists():
        return None
    return pick_token(read_token_file(path), role, path, bare_ok=True)


def pick_token(entries: list[tuple[str, str, str]], role: str, path: str | Path, *, bare_ok: bool = True) -> str:
    """The token to send for ``role`` from a token file's entries (worker: a worker token, else an admin one)."""
    if bare_ok and len(entries) == 1 and entries[0][:2] == ("admin", "admin"):
        return entries[0][2]
    wanted = [role] if role == "admin" else [role, "admin"]
    for want in wanted:
        for _name, r, token in entries:
            if r == want:
                return token
    raise SweepdeckError(f"Token file {path} has no {role} token.", f"Add a line `NAME {role} TOKEN`.")

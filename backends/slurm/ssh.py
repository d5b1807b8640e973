"""The SSH side of the slurm backend: one reconnecting connection to the login node.

* :class:`HostKeys` implements OpenSSH's ``StrictHostKeyChecking accept-new``
  (asyncssh does not): a host already in ``known_hosts`` must present the same
  key; a host never seen before is trusted on first use and appended. Host key
  checking is never switched off.
* :func:`connect` maps every connection failure to one :class:`SweepdeckError`
  (authentication, unknown host name, refused, timeout, changed host key) and
  opens a ProxyJump from the ssh config itself, so every hop gets the same
  key, known_hosts and accept-new policy as the target.
* :class:`Remote` wraps the connection: quoted-argv commands, a local port
  forward that is re-opened on the same port after a reconnect, and a watcher
  that reconnects with backoff when the connection drops and tells its
  listeners (state ``broken`` → ``reconnecting`` → ``up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from config.errors import SweepdeckError

log = logging.getLogger(__name__)

#: Where a tunnel's local end listens (the run's endpoint on this machine).
LOOPBACK = "127.0.0.1"

#: Seconds between reconnect attempts (the last one repeats).
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(slots=True)
class SshTarget:
    """Where and how to connect (from a slurm profile)."""

    host: str
    port: int | None = None
    user: str | None = None
    config: str | None = None
    key: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    connect_timeout: float = 30.0

    @classmethod
    def from_profile(cls, profile: Any) -> SshTarget:
        return cls(
            host=profile["ssh_host"],
            port=profile.get("ssh_port"),
            user=profile.get("ssh_user"),
            config=profile.get("ssh_config"),
            key=profile.get("ssh_key"),
            known_hosts=profile.get("known_hosts") or "~/.ssh/known_hosts",
            connect_timeout=float(profile.get("connect_timeout", 30.0)),
        )

    @property
    def label(self) -> str:
        return self.host if not self.port else f"{self.host}:{self.port}"


# --------------------------------------------------------------------- host keys


def _known_hosts_name(host: str, port: int | None) -> str:
    return host if not port or port == 22 else f"[{host}]:{port}"


@dataclass
class HostKeys:
    """accept-new host key checking against one known_hosts file.

    Args:
        path: The known_hosts file (created with mode 0600 when first needed).
    """

    path: Path
    #: Hosts added during this process (``[host]:port`` names), for messages/tests.
    added: list[str] = field(default_factory=list)
    #: Why the last key was refused (a changed key), if it was.
    refused: str = ""

    def __post_init__(self) -> None:
        self.path = Path(os.path.expanduser(str(self.path)))

    def load(self) -> asyncssh.SSHKnownHosts:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        return asyncssh.import_known_hosts(text)

    def validate(self, host: str, addr: str, port: int | None, key: asyncssh.SSHKey) -> bool:
        """Called for a key that is not already trusted: accept it only for a new host."""
        known = self.load()
        names = [host] + ([addr] if addr and addr != host else [])
        for name in names:
            trusted = known.match(name, addr, port)[0]
            if trusted:
                self.refused = (
                    f"The host key of {_known_hosts_name(host, port)} has changed "
                    f"(now {key.get_algorithm()} {key.get_fingerprint()}); {self.path} has another key for it."
                )
                return False
        self.append(host, port, key)
        return True

    def append(self, host: str, port: int | None, key: asyncssh.SSHKey) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = f"{_known_hosts_name(host, port)} {key.export_public_key('openssh').decode().strip()}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line)
        self.added.append(_known_hosts_name(host, port))

    def client_factory(self) -> Callable[[], asyncssh.SSHClient]:
        policy = self

        class _Client(asyncssh.SSHClient):
            def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
                return policy.validate(host, addr, port, key)

        return _Client


# ---------------------------------------------------------------------- connect


#: Jump hosts followed at most (a ProxyJump of a jump host counts too): a loop in ssh_config ends here.
MAX_JUMPS = 8


def config_paths(target: SshTarget) -> list[str]:
    """The OpenSSH client config files asyncssh reads for ``target`` (the same default it uses)."""
    if target.config:
        return [os.path.expanduser(target.config)]
    default = os.path.expanduser("~/.ssh/config")
    return [default] if os.access(default, os.R_OK) else []


def proxy_jump(target: SshTarget) -> list[str]:
    """The ProxyJump hops (``[user@]host[:port]``, first first) for ``target.host`` in its ssh config."""
    paths = config_paths(target)
    if not paths:
        return []
    try:
        import getpass

        from asyncssh.config import SSHClientConfig

        config = SSHClientConfig.load(
            None, paths, False, False, False, getpass.getuser(), target.user or (), target.host, target.port or ())
    except (OSError, asyncssh.Error, ValueError) as exc:
        raise SweepdeckError(f"Cannot read the SSH config {paths[0]}: {_reason(exc)}.",
                             "Fix the file (or the profile's ssh_config).") from None
    value = config.get("ProxyJump")
    if not value or str(value).lower() == "none":
        return []
    return [hop.strip() for hop in str(value).split(",") if hop.strip()]


def _hop_target(spec: str, target: SshTarget) -> SshTarget:
    """A jump host as a target: its own user/port (or its ssh_config's), the profile's key and known_hosts."""
    user, _, host = spec.rpartition("@")
    port: int | None = None
    if host.startswith("[") and "]" in host:  # [v6addr]:port
        inner, _, rest = host[1:].partition("]")
        host, port = inner, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    elif host.count(":") == 1:
        name, _, port_text = host.partition(":")
        if not port_text.isdigit():
            raise SweepdeckError(f"ProxyJump {spec!r} for {target.host}: {port_text!r} is not a port.",
                                 "Fix ProxyJump in your ssh config: [user@]host[:port], comma-separated.")
        host, port = name, int(port_text)
    return SshTarget(host, port, user or None, target.config, target.key, target.known_hosts, target.connect_timeout)


async def _open_jumps(target: SshTarget, host_keys: HostKeys, depth: int) -> asyncssh.SSHClientConnection | None:
    """Connect to ``target``'s ProxyJump hops ourselves, under our host-key policy and key.

    asyncssh would open them from ssh_config with only ``config=``: the hop
    would use another known_hosts, no accept-new, and not the profile's key.
    Returns the last hop's connection (None: no jump).
    """
    hops = proxy_jump(target)
    if not hops:
        return None
    if depth >= MAX_JUMPS:
        raise SweepdeckError(
            f"SSH to {target.host}: more than {MAX_JUMPS} jump hosts (a ProxyJump loop in the ssh config?).",
            "Check ProxyJump in " + (config_paths(target) or ["~/.ssh/config"])[0] + ".",
        )
    conn: asyncssh.SSHClientConnection | None = None
    try:
        for spec in hops:
            hop = _hop_target(spec, target)
            try:
                # The first hop may itself be reached through its own ProxyJump (OpenSSH does that too).
                nxt = await connect(hop, host_keys, _depth=depth + 1, **({"tunnel": conn} if conn is not None else {}))
            except SweepdeckError as exc:
                raise SweepdeckError(f"Jump host {spec} (ProxyJump for {target.host}): {exc.message}",
                                     exc.hint) from None
            if conn is not None:
                nxt.set_tunnel(conn)  # closing the outer hop closes the ones under it
            conn = nxt
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn


async def connect(target: SshTarget, host_keys: HostKeys | None = None, *, _depth: int = 0,
                  **kwargs: Any) -> asyncssh.SSHClientConnection:
    """Open an SSH connection; every failure becomes one readable SweepdeckError.

    A ProxyJump in the ssh config is followed here, hop by hop, with the same
    key, known_hosts and accept-new policy as the target (``tunnel=`` in
    ``kwargs`` skips that: the caller chose the way).
    """
    host_keys = host_keys or HostKeys(Path(target.known_hosts))
    jump = None
    if "tunnel" not in kwargs:
        jump = await _open_jumps(target, host_keys, _depth)
        # Always pass tunnel=: without it asyncssh would open the config's ProxyJump itself.
        kwargs["tunnel"] = jump
    try:
        conn = await _connect_one(target, host_keys, **kwargs)
    except BaseException:
        if jump is not None:
            jump.close()
        raise
    if jump is not None:
        conn.set_tunnel(jump)  # the jump connection lives and dies with this one
    return conn


async def _connect_one(target: SshTarget, host_keys: HostKeys, **kwargs: Any) -> asyncssh.SSHClientConnection:
    options: dict[str, Any] = {
        "known_hosts": host_keys.load(),
        "client_factory": host_keys.client_factory(),
        "connect_timeout": target.connect_timeout,
        # Detect a dead link within ~3 keepalives instead of a TCP timeout.
        "keepalive_interval": 5,
        "keepalive_count_max": 3,
    }
    if target.port:
        options["port"] = target.port
    if target.user:
        options["username"] = target.user
    if target.config:
        options["config"] = [os.path.expanduser(target.config)]
    if target.key:
        options["client_keys"] = [os.path.expanduser(target.key)]
    options.update(kwargs)
    name = target.host
    try:
        return await asyncio.wait_for(asyncssh.connect(target.host, **options), target.connect_timeout + 5)
    except asyncssh.HostKeyNotVerifiable as exc:
        if host_keys.refused:
            raise SweepdeckError(
                f"SSH connection to {name} refused: {host_keys.refused}",
                "If the host was really reinstalled, remove the old key with: "
                + shlex.join(["ssh-keygen", "-R", _known_hosts_name(target.host, target.port),
                              "-f", str(host_keys.path)]),
            ) from None
        raise SweepdeckError(
            f"SSH connection to {name} refused: the host key could not be verified ({exc.reason})."
        ) from None
    except asyncssh.PermissionDenied:
        raise SweepdeckError(
            f"SSH authentication to {name} failed (permission denied).",
            "Check your key: ssh-add -l, the profile's ssh_key/ssh_user, or your ~/.ssh/config entry; "
            f"try it by hand with: ssh {name} true",
        ) from None
    except socket.gaierror:
        raise SweepdeckError(
            f"Unknown SSH host {name!r}: the name does not resolve.",
            "Check the profile's ssh_host (an alias from ~/.ssh/config works) and your network/VPN.",
        ) from None
    except TimeoutError:
        raise SweepdeckError(
            f"SSH connection to {name} timed out after {target.connect_timeout:g} s.",
            "Check your network/VPN and that the host is up (connect_timeout in the profile sets the limit).",
        ) from None
    except ConnectionRefusedError:
        raise SweepdeckError(
            f"SSH connection to {target.label} was refused (nothing listens on that port).",
            "Check the profile's ssh_host and ssh_port.",
        ) from None
    except (OSError, asyncssh.Error) as exc:
        raise SweepdeckError(f"SSH connection to {name} failed: {_reason(exc)}.",
                             "Check the host and try: ssh " + name) from None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# ----------------------------------------------------------------------- remote


@dataclass(slots=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


StateListener = Callable[[str, str], Any]  # (state, detail)


class Remote:
    """A reconnecting SSH connection to the login node.

    Args:
        target: Where to connect.
        on_state: Called with ``("broken"|"reconnecting"|"up", detail)`` when the
            connection drops and comes back.
        backoff: Seconds between reconnect attempts.
    """

    def __init__(self, target: SshTarget, *, host_keys: HostKeys | None = None,
                 backoff: Sequence[float] = BACKOFF) -> None:
        self.target = target
        self.host_keys = host_keys or HostKeys(Path(target.known_hosts))
        self.backoff = tuple(backoff)
        self.conn: asyncssh.SSHClientConnection | None = None
        self.generation = 0
        self._closing = False
        self._up = asyncio.Event()
        self._watch: asyncio.Task | None = None
        self._state_listeners: list[StateListener] = []
        self._reconnect_hooks: list[Callable[[], Awaitable[None]]] = []
        self._forwards: dict[int, _Forward] = {}
        self._home: str | None = None

    # lifecycle -----------------------------------------------------------------
    async def connect(self) -> Remote:
        self.conn = await connect(self.target, self.host_keys)
        self.generation += 1
        self._up.set()
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_loop(), name="ssh-watch")
        return self

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def on_state(self, listener: StateListener) -> None:
        self._state_listeners.append(listener)

    def on_reconnect(self, hook: Callable[[], Awaitable[None]]) -> None:
        """``hook`` runs after every successful reconnect (tails resume there)."""
        self._reconnect_hooks.append(hook)

    def forget(self, listener: StateListener | None = None, hook: Callable[[], Awaitable[None]] | None = None) -> None:
        """Remove a state listener and/or reconnect hook (a run stopped watching)."""
        if listener in self._state_listeners:
            self._state_listeners.remove(listener)
        if hook in self._reconnect_hooks:
            self._reconnect_hooks.remove(hook)

    def _notify(self, state: str, detail: str = "") -> None:
        for listener in list(self._state_listeners):
            try:
                listener(state, detail)
            except Exception:  # a UI listener must not break the connection
                log.exception("ssh state listener failed")

    async def _watch_loop(self) -> None:
        while not self._closing:
            conn = self.conn
            assert conn is not None
            await conn.wait_closed()
            if self._closing:
                return
            self._up.clear()
            self._notify("broken", f"SSH connection to {self.target.host} lost")
            attempt = 0
            while not self._closing:
                delay = self.backoff[min(attempt, len(self.backoff) - 1)]
                await asyncio.sleep(delay)
                attempt += 1
                self._notify("reconnecting", f"attempt {attempt}")
                try:
                    self.conn = await connect(self.target, self.host_keys)
                except SweepdeckError as exc:
                    log.info("reconnect %d to %s failed: %s", attempt, self.target.host, exc.message)
                    if self.host_keys.refused:
                        # A changed host key is not a hiccup: never retry into it.
                        self._notify("failed", exc.message)
                        return
                    continue
                break
            if self._closing:
                return
            self.generation += 1
            try:
                await self._reopen_forwards()
            except Exception:  # the connection itself is up: commands and tails work again
                log.exception("re-opening forwards failed")
            self._up.set()
            for hook in list(self._reconnect_hooks):
                try:
                    await hook()
                except Exception:
                    log.exception("reconnect hook failed")
            self._notify("up", f"reconnected to {self.target.host}")

    async def wait_up(self, timeout: float | None = None) -> asyncssh.SSHClientConnection:
        if not self._up.is_set():
            await asyncio.wait_for(self._up.wait(), timeout)
        assert self.conn is not None
        return self.conn

    async def close(self) -> None:
        self._closing = True
        for port in list(self._forwards):
            self.close_forward(port)
        if self.conn is not None:
            self.conn.close()
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(self.conn.wait_closed(), 5)
        self._up.clear()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
            self._watch = None

    # commands ------------------------------------------------------------------
    async def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0,
                  cwd: str | None = None, retry: bool = True) -> Result:
        """Run ``argv`` remotely (quoted with shlex.join, never interpolated).

        Args:
            cwd: Change to this directory first (quoted too).
            retry: Wait for a reconnect and try again once when the connection drops.
        """
        command = shlex.join(list(argv))
        if cwd:
            command = shlex.join(["cd", cwd]) + " && " + command
        return await self.run_raw(command, input=input, timeout=timeout, retry=retry)

    async def run_raw(self, command: str, *, input: str | None = None, timeout: float = 60.0,
                      retry: bool = True) -> Result:
        """Run an already-quoted command line (callers build it with shlex)."""
        for attempt in (0, 1):
            try:
                conn = await self.wait_up(timeout)
                res = await asyncio.wait_for(conn.run(command, input=input, check=False), timeout)
                return Result(res.exit_status if res.exit_status is not None else 255, _text(res.stdout),
                              _text(res.stderr))
            except TimeoutError:
                raise SweepdeckError(
                    f"Remote command timed out after {timeout:g} s on {self.target.host}: {command[:80]}",
                    "The login node or the SLURM controller may be overloaded; try again.",
                ) from None
            except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError,
                    ConnectionError) as exc:
                if not retry or attempt or self._closing:
                    raise SweepdeckError(f"Remote command failed: SSH connection lost ({_reason(exc)}).") from None
                await asyncio.sleep(0)
        raise AssertionError("unreachable")

    async def home(self) -> str:
        """The remote $HOME (to place ``~/...`` paths)."""
        if self._home is None:
            res = await self.run_raw('printf %s "$HOME"')
            self._home = res.stdout.strip() or "."
        return self._home

    async def expand(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            return (await self.home()).rstrip("/") + path[1:]
        return path

    async def write_file(self, path: str, text: str, mode: str = "644") -> None:
        """Write ``text`` to a remote file through stdin (no temp files, no quoting of contents)."""
        script = 'umask 022 && cat > "$1" && chmod "$2" "$1"'
        res = await self.run(["sh", "-c", script, "sh", path, mode], input=text)
        if not res.ok:
            raise SweepdeckError(f"Could not write {path} on {self.target.host}: "
                                 f"{res.stderr.strip() or res.returncode}.")

    # tunnel ----------------------------------------------------------------------
    async def forward(self, local_port: int, host: str, port: int, *, via: str | None = None,
                      via_port: int | None = None) -> int:
        """Forward ``127.0.0.1:local_port`` to ``host:port``.

        Without ``via`` the login node opens the connection to ``host:port``.
        With ``via`` (a compute node's name) the forward runs over a second
        SSH connection to that node, jumped through the login node -- the
        original script's ``ssh -L PORT:NODE:PORT -J login NODE`` -- and the
        node's host key gets the same accept-new treatment. The forward is
        re-opened on the same local port after a reconnect.
        """
        fwd = _Forward(local_port, host, port, via, via_port)
        await self._open_forward(fwd)
        local_port = fwd.listener.get_port()
        fwd.local_port = local_port
        self._forwards[local_port] = fwd
        return local_port

    async def _open_forward(self, fwd: _Forward, conn: asyncssh.SSHClientConnection | None = None) -> None:
        if conn is None:
            conn = await self.wait_up(self.target.connect_timeout)
        if fwd.via:
            hop = SshTarget(fwd.via, fwd.via_port, self.target.user, None, self.target.key,
                            self.target.known_hosts, self.target.connect_timeout)
            fwd.node_conn = await connect(hop, self.host_keys, tunnel=conn, config=[])
            conn = fwd.node_conn
        try:
            fwd.listener = await conn.forward_local_port(LOOPBACK, fwd.local_port, fwd.host, fwd.port)
        except BaseException:
            if fwd.node_conn is not None:
                fwd.node_conn.close()
                fwd.node_conn = None
            raise

    def close_forward(self, local_port: int) -> None:
        fwd = self._forwards.pop(local_port, None)
        if fwd is not None:
            fwd.close()

    async def _reopen_forwards(self) -> None:
        for fwd in list(self._forwards.values()):
            fwd.close()
            for attempt in range(20):
                try:
                    await self._open_forward(fwd, self.conn)
                    break
                except (OSError, SweepdeckError,
                        asyncssh.Error) as exc:  # the old listener may take a moment to release the port
                    if attempt == 19:
                        self._notify("broken", f"cannot re-open the tunnel on port {fwd.local_port}: {exc}")
                    await asyncio.sleep(0.1)


@dataclass(slots=True)
class _Forward:
    local_port: int
    host: str
    port: int
    via: str | None = None
    via_port: int | None = None
    listener: Any = None
    node_conn: Any = None

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.node_conn is not None:
            self.node_conn.close()
            self.node_conn = None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)

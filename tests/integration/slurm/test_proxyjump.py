"""A profile whose ssh_config alias jumps through another host: the jump gets our key and host-key policy.

Real sshd on 127.0.0.1; the alias jumps ``localhost`` → ``127.0.0.1`` (OpenSSH
refuses a jump spelled like its target). The config names no IdentityFile:
only the profile's ``ssh_key`` opens either hop, and only the profile's
``known_hosts`` (accept-new) can vouch for the jump host.
"""

from __future__ import annotations

import subprocess

import pytest

from backends.slurm.ssh import HostKeys, Remote, SshTarget, connect, proxy_jump
from config.errors import SweepdeckError

pytestmark = pytest.mark.services


def _jump_config(cluster, tmp_path, alias: str = "jumped") -> str:
    path = tmp_path / "ssh_config"
    path.write_text(
        f"Host {alias}\n"
        f"  HostName 127.0.0.1\n"
        f"  Port {cluster.ssh_port}\n"
        f"  User {cluster.user}\n"
        f"  ProxyJump {cluster.user}@localhost:{cluster.ssh_port}\n"
    )
    return str(path)


def _target(cluster, tmp_path, config: str, alias: str = "jumped") -> SshTarget:
    return SshTarget(alias, config=config, key=str(cluster.client_key),
                     known_hosts=str(tmp_path / "known_hosts"), connect_timeout=10.0)


async def test_proxyjump_hop_uses_profile_key_and_accept_new(cluster, tmp_path):
    config = _jump_config(cluster, tmp_path)
    target = _target(cluster, tmp_path, config)
    assert proxy_jump(target) == [f"{cluster.user}@localhost:{cluster.ssh_port}"]
    keys = HostKeys(tmp_path / "known_hosts")
    remote = Remote(target, host_keys=keys)
    await remote.connect()
    try:
        res = await remote.run(["echo", "through the jump"])
        assert res.ok and res.stdout.strip() == "through the jump"
        # both hops were new: both trusted on first use, in the profile's known_hosts
        assert keys.added == [f"[localhost]:{cluster.ssh_port}", f"[127.0.0.1]:{cluster.ssh_port}"]
        text = (tmp_path / "known_hosts").read_text()
        assert f"[localhost]:{cluster.ssh_port} ssh-ed25519 " in text
        assert f"[127.0.0.1]:{cluster.ssh_port} ssh-ed25519 " in text
    finally:
        await remote.close()
    # second time: both keys known, nothing appended
    keys2 = HostKeys(tmp_path / "known_hosts")
    conn = await connect(target, keys2)
    conn.close()
    assert keys2.added == []


async def test_proxyjump_hop_with_changed_host_key_is_refused(cluster, tmp_path):
    config = _jump_config(cluster, tmp_path)
    target = _target(cluster, tmp_path, config)
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    # known_hosts already has another key for the jump host: it must not be trusted blindly
    kind, key = (tmp_path / "other_host_key.pub").read_text().split(" ", 2)[:2]
    (tmp_path / "known_hosts").write_text(f"[localhost]:{cluster.ssh_port} {kind} {key}\n")
    keys = HostKeys(tmp_path / "known_hosts")
    with pytest.raises(SweepdeckError) as info:
        await connect(target, keys)
    message = info.value.message
    assert message.startswith(f"Jump host {cluster.user}@localhost:{cluster.ssh_port} (ProxyJump for jumped)")
    assert f"The host key of [localhost]:{cluster.ssh_port} has changed" in message
    assert "ssh-keygen -R" in info.value.hint
    assert keys.added == []  # the target was never reached


async def test_proxyjump_hop_without_the_profile_key_fails_auth(cluster, tmp_path):
    """The hop really authenticates with the profile's key: with another key it is refused."""
    config = _jump_config(cluster, tmp_path)
    other = tmp_path / "not_authorized"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    target = SshTarget("jumped", config=config, key=str(other), known_hosts=str(tmp_path / "known_hosts"),
                       connect_timeout=10.0)
    with pytest.raises(SweepdeckError) as info:
        await connect(target, HostKeys(tmp_path / "known_hosts"))
    assert "Jump host" in info.value.message and "authentication" in info.value.message


async def test_slurm_backend_check_ssh_through_a_jump(slurm_profile, tmp_path, fresh_registry):
    from backends.slurm import SlurmBackend

    config = _jump_config(slurm_profile.cluster, tmp_path, alias="alvis-jumped")
    settings, profile = slurm_profile.profile(ssh_host="alvis-jumped", ssh_port=None, ssh_user=None, ssh_config=config)
    backend = SlurmBackend(settings, profile)
    try:
        check = await backend.check_ssh()
        assert check.ok, check
        assert f"[localhost]:{slurm_profile.cluster.ssh_port}" in slurm_profile.known_hosts.read_text()
    finally:
        await backend.close()

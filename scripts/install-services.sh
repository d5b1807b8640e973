#!/usr/bin/env bash
# Installs the real services the integration tests start: OpenSSH, SLURM + munge, PostgreSQL.
# Needs root (apt-get); as a normal user it only reports what is missing — the tests that need
# a missing service then skip, unless SWEEPDECK_REQUIRE_SERVICES=1 turns that skip into a failure.
set -euo pipefail
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server openssh-client)
command -v slurmctld >/dev/null 2>&1 || need+=(slurmctld slurmd slurm-client munge)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
# the network-partition test: a namespace and a veth pair (ip), daemons started inside it (nsenter)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: missing test services (${need[*]}); install them to run the integration tests" >&2
  exit 0
fi
echo "installing test services: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null

"""The user config file: XDG location, profiles, validation messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.errors import ConfigError, SweepdeckError
from config.settings import config_path, load_settings
from tests.support.upstream_files import blis_catalog_dir

EXAMPLE = """\
catalog_dir: {catalogs}
default_backend: local
keys:
  new_experiment: ctrl+n
  quit: q
local:
  server: sim
  port: 8123
profiles:
  alvis:
    backend: slurm
    ssh_host: alvis2
    account: NAISS2025-22-1522
    gpus: "A40:1"
    time: "2:00:00"
    container: apptainer exec /apps/containers/vLLM/vllm-0.11.0.sif vllm serve
    models: ~/alvis-vllm/models.json
  mert:
    backend: tekton
    namespace: mert
  queue:
    backend: argo
    model_version_id: 3
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def xdg_config(private_dirs) -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "sweepdeck" / "config.yaml"


def test_default_location_is_xdg(private_dirs):
    assert config_path() == xdg_config(private_dirs)


def test_no_file_gives_defaults(private_dirs):
    settings = load_settings()
    assert settings.path is None
    assert settings.default_backend == "local"
    assert settings.local["server"] == "sim" and settings.local["port"] == 8000
    assert settings.profiles == {} and settings.keys == {}
    assert settings.catalogs.models.default_image  # the shipped catalogs


def test_full_example_from_the_xdg_dir(private_dirs):
    cfg = write(xdg_config(private_dirs), EXAMPLE.format(catalogs=blis_catalog_dir()))
    settings = load_settings()
    assert settings.path == cfg
    assert settings.local["port"] == 8123
    assert settings.keys == {"new_experiment": "ctrl+n", "quit": "q"}
    alvis = settings.profile("alvis")
    assert alvis.backend == "slurm" and alvis["ssh_host"] == "alvis2" and alvis["time"] == "2:00:00"
    assert alvis["poll_interval"] == 5.0  # a default filled in
    assert settings.profile(None, "tekton").name == "mert"
    assert settings.profile("queue")["model_version_id"] == 3
    assert settings.profile(None).name == "local"
    assert settings.catalog_dir == blis_catalog_dir()
    assert settings.catalogs.models.path == blis_catalog_dir() / "known-models.yaml"


def test_catalog_dir_option_wins(private_dirs, tmp_path):
    write(xdg_config(private_dirs), "catalog_dir: /nonexistent/never\n")
    own = tmp_path / "cats"
    own.mkdir()
    settings = load_settings(catalog_dir=own)
    assert settings.catalog_dir == own


def test_catalog_dir_missing(private_dirs, tmp_path):
    cfg = write(xdg_config(private_dirs), "catalog_dir: /nonexistent/never\n")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(cfg) in str(err.value) and "catalog_dir" in str(err.value) and "an existing directory" in str(err.value)
    with pytest.raises(SweepdeckError, match="--catalog-dir"):
        load_settings(catalog_dir=tmp_path / "nope")


def test_relative_catalog_dir_is_relative_to_the_config(tmp_path):
    (tmp_path / "conf" / "cats").mkdir(parents=True)
    cfg = write(tmp_path / "conf" / "config.yaml", "catalog_dir: cats\n")
    assert load_settings(cfg).catalog_dir == tmp_path / "conf" / "cats"


def test_explicit_config_missing(tmp_path):
    with pytest.raises(SweepdeckError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")


def test_env_config_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPDECK_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(SweepdeckError, match="SWEEPDECK_CONFIG"):
        load_settings()


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("default_backend: k8s\n", "default_backend", "one of local, slurm, tekton, argo"),
        ("log_line_cap: 10\n", "log_line_cap", "at least 1000"),
        ("log_line_cap: many\n", "log_line_cap", "an integer"),
        ("keys: [a]\n", "keys", "a mapping"),
        ("keys:\n  quit: 5\n", "keys.quit", "a key name"),
        ("local:\n  port: 99999\n", "local.port", "a TCP port"),
        ("local:\n  server: docker\n", "local.server", "one of sim, vllm, auto, command"),
        ("local:\n  command: vllm serve\n", "local.command", "a list"),
        ("profiles:\n  x:\n    ssh_host: h\n", "profiles.x.backend", "one of local, slurm, tekton, argo"),
        ("profiles:\n  x: slurm\n", "profiles.x", "a mapping with at least 'backend'"),
        ("profiles:\n  x:\n    backend: slurm\n", "profiles.x.ssh_host", "(missing)"),
        ("profiles:\n  x:\n    backend: slurm\n    ssh_host: 'a b'\n", "profiles.x.ssh_host", "a single word"),
        ("profiles:\n  x:\n    backend: slurm\n    ssh_host: h\n    time: forever\n", "profiles.x.time", "H:MM:SS"),
        ("profiles:\n  x:\n    backend: slurm\n    ssh_host: h\n    ssh_port: '22'\n", "profiles.x.ssh_port",
         "an integer"),
        ("profiles:\n  x:\n    backend: tekton\n    namespace: Mert\n", "profiles.x.namespace", "a DNS-1123 name"),
        ("profiles:\n  x:\n    backend: argo\n    batch_size: 0\n", "profiles.x.batch_size", "a positive number"),
        ("profiles:\n  x:\n    backend: argo\n    poll_interval: true\n", "profiles.x.poll_interval", "a number"),
        ("profiles:\n  local:\n    backend: slurm\n", "profiles.local", "a name other than 'local'"),
        ("profiles:\n  'a b':\n    backend: tekton\n", "profiles.a b", "a profile name"),
        ("default_profile: nope\n", "default_profile", "the name of a profile"),
        ("- a\n- b\n", "", "a mapping of settings"),
    ],
)
def test_every_error_names_file_key_and_expected(tmp_path, text, key, expected):
    cfg = write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    msg = str(err.value)
    assert msg.startswith(str(cfg)), msg
    assert key in msg, msg
    assert expected in msg, msg
    assert err.value.hint == f"Fix {cfg} and try again."


@pytest.mark.parametrize(
    "text, key, suggestion",
    [
        ("defualt_backend: local\n", "defualt_backend", "default_backend"),
        ("local:\n  prot: 8000\n", "local.prot", "port"),
        ("profiles:\n  x:\n    backend: slurm\n    ssh_host: h\n    acount: a\n", "profiles.x.acount", "account"),
        ("profiles:\n  x:\n    backend: tekton\n    zzz: 1\n", "profiles.x.zzz", "namespace"),
    ],
)
def test_unknown_keys(tmp_path, text, key, suggestion):
    cfg = write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    msg = str(err.value)
    assert str(cfg) in msg and key in msg and "a known setting" in msg
    assert suggestion in msg  # a close match or the list of known keys


def test_malformed_config_yaml(tmp_path):
    cfg = write(tmp_path / "config.yaml", "profiles:\n  x:\n    backend: [slurm\n")
    with pytest.raises(SweepdeckError) as err:
        load_settings(cfg)
    assert str(cfg) in err.value.message and "line 4" in err.value.message


def test_profile_lookup_errors(tmp_path):
    cfg = write(
        tmp_path / "config.yaml",
        "profiles:\n  a:\n    backend: tekton\n  b:\n    backend: tekton\n  s:\n    backend: slurm\n    ssh_host: h\n",
    )
    settings = load_settings(cfg)
    with pytest.raises(SweepdeckError, match="No profile named 'zz'"):
        settings.profile("zz")
    with pytest.raises(SweepdeckError, match="Several tekton profiles"):
        settings.profile(None, "tekton")
    with pytest.raises(SweepdeckError, match="for the slurm backend"):
        settings.profile("s", "tekton")
    # A backend with no profile runs on its defaults.
    argo = settings.profile(None, "argo")
    assert argo.backend == "argo" and argo["namespace"] == "argo"


def test_default_profile(tmp_path):
    cfg = write(
        tmp_path / "config.yaml",
        "default_profile: b\nprofiles:\n  a:\n    backend: tekton\n  b:\n    backend: tekton\n    namespace: team-b\n",
    )
    settings = load_settings(cfg)
    assert settings.profile(None, "tekton").name == "b"


def test_config_is_never_written(tmp_path):
    cfg = write(tmp_path / "conf" / "config.yaml", EXAMPLE.format(catalogs=blis_catalog_dir()))
    before = (cfg.read_bytes(), cfg.stat().st_mtime_ns)
    load_settings(cfg).profile("alvis")
    assert (cfg.read_bytes(), cfg.stat().st_mtime_ns) == before
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["config.yaml"]

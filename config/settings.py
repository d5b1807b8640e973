"""The user config file: backend profiles, catalog dir, key bindings.

Lives at ``$XDG_CONFIG_HOME/sweepdeck/config.yaml`` (``--config`` for another).
Example::

    catalog_dir: ~/blis/.claude/config     # your own known-models.yaml etc.
    default_backend: local
    keys:                                  # binding id -> key (see ? in the app)
      new_experiment: ctrl+n
    local:                                 # the embedded default profile
      server: sim
      port: 8000
    profiles:
      alvis:
        backend: slurm
        ssh_host: alvis2
        account: NAISS2025-22-1522
        gpus: "A40:1"
        container: apptainer exec /apps/containers/vLLM/vllm-0.11.0.sif vllm serve
        models: ~/alvis-vllm/models.json
      mert:
        backend: tekton
        namespace: mert

It is only ever read; sweepdeck never writes the user's config.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.catalog import Catalogs, load_catalogs, load_yaml
from config.errors import ConfigError, SweepdeckError
from config.profiles import BACKENDS, fields_for
from config.schema import REQUIRED, Field, validate

TOP_FIELDS = {
    "catalog_dir": Field(str, None, "directory with known-models.yaml, workload-presets.yaml, vllm-args.yaml"),
    "default_backend": Field(str, "local", choices=BACKENDS),
    "default_profile": Field(str, None, "profile used when none is named"),
    "keys": Field(dict, {}, "binding id -> key"),
    "theme": Field(str, None, "a Textual theme name"),
    "log_line_cap": Field(int, 100_000, "lines kept in the log pane",
                          check=lambda v: None if v >= 1000 else "at least 1000"),
    "local": Field(dict, {}, "options of the embedded local backend"),
    "profiles": Field(dict, {}, "named backend profiles"),
}


_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def config_path() -> Path:
    """The user config file: ``$SWEEPDECK_CONFIG`` or ``$XDG_CONFIG_HOME/sweepdeck/config.yaml``."""
    env = os.environ.get("SWEEPDECK_CONFIG")
    if env:
        return Path(env)
    from platformdirs import user_config_path

    return user_config_path("sweepdeck") / "config.yaml"


@dataclass(slots=True)
class Profile:
    """A validated backend profile (``profile["ssh_host"]``...)."""

    name: str
    backend: str
    options: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.options[key]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.options.get(key)
        return default if value is None else value


@dataclass(slots=True)
class Settings:
    """Everything from the user config, validated, with defaults."""

    path: Path | None = None
    catalog_dir: Path | None = None
    default_backend: str = "local"
    default_profile: str | None = None
    keys: dict[str, str] = field(default_factory=dict)
    theme: str | None = None
    log_line_cap: int = 100_000
    local: Profile = field(default_factory=lambda: Profile("local", "local",
                                                           validate(fields_for("local"), {}, "", "local")))
    profiles: dict[str, Profile] = field(default_factory=dict)
    _catalogs: Catalogs | None = None

    @property
    def catalogs(self) -> Catalogs:
        if self._catalogs is None:
            self._catalogs = load_catalogs(self.catalog_dir)
        return self._catalogs

    def base_values(self, backend: str, profile: str | None = None) -> dict[str, Any] | None:
        """The BLIS values.yaml a profile's runs start from (None for backends that use none).

        The backend's profile schema says whether it uses one (``USES_VALUES``);
        the profile's ``values`` file wins over sweepdeck's own.
        """
        import importlib

        from config.catalog import DATA_DIR, load_yaml

        try:
            uses = getattr(importlib.import_module(f"config.profiles.{backend}"), "USES_VALUES", False)
        except ImportError:
            return None
        if not uses:
            return None
        path: Path | None = None
        try:
            prof = self.profile(profile, backend)
            if prof.get("values"):
                path = Path(str(prof.get("values"))).expanduser()
        except SweepdeckError:
            pass
        data = load_yaml(path or DATA_DIR / "values.yaml")
        return data if isinstance(data, dict) else None

    def profile(self, name: str | None, backend: str | None = None) -> Profile:
        """Find a profile by name; ``None`` gives the default for ``backend``.

        Raises:
            SweepdeckError: no such profile, or it is for another backend.
        """
        if name is None:
            backend = backend or self.default_backend
            if backend == "local":
                return self.local
            candidates = [p for p in self.profiles.values() if p.backend == backend]
            if self.default_profile in self.profiles and self.profiles[self.default_profile].backend == backend:
                return self.profiles[self.default_profile]
            if len(candidates) == 1:
                return candidates[0]
            if not candidates:
                # A backend with no profile runs on its defaults where it can.
                return Profile(backend, backend,
                               validate_profile(backend, {"backend": backend}, self.path, backend, lenient=True))
            raise SweepdeckError(
                f"Several {backend} profiles exist: {', '.join(p.name for p in candidates)}.",
                "Name one with --profile.",
            )
        if name == "local":
            return self.local
        if name not in self.profiles:
            known = ", ".join(sorted(self.profiles)) or "(none)"
            raise SweepdeckError(
                f"No profile named {name!r} in {self.path or 'the config'}.",
                f"Profiles: {known}. Add one under 'profiles:' in {config_path()}.",
            )
        prof = self.profiles[name]
        if backend and prof.backend != backend:
            raise SweepdeckError(f"Profile {name!r} is for the {prof.backend} backend, not {backend}.")
        return prof


def validate_profile(backend: str, data: dict[str, Any], path: Path | str | None, where: str,
                     lenient: bool = False) -> dict[str, Any]:
    fields = fields_for(backend)
    if lenient:
        # Defaults only: required keys without a value stay None.
        fields = {k: Field(f.type, None if f.default is REQUIRED else f.default, f.help, f.choices, f.check)
                  for k, f in fields.items()}
    return validate(fields, data, path or "config", where)


def load_settings(path: str | Path | None = None, catalog_dir: str | Path | None = None) -> Settings:
    """Read and validate the user config (a missing default file is fine).

    Args:
        path: Config file (``--config``); must exist when given.
        catalog_dir: ``--catalog-dir``; wins over the file's ``catalog_dir``.

    Raises:
        SweepdeckError / ConfigError: unreadable or invalid config, naming the
            file, the key and what is expected.
    """
    explicit = path is not None or bool(os.environ.get("SWEEPDECK_CONFIG"))
    cfg = Path(path).expanduser() if path else config_path()
    data: Any = {}
    if cfg.exists():
        data = load_yaml(cfg) or {}
    elif explicit:
        raise SweepdeckError(f"Config file {cfg} does not exist.", "Check the --config path (or $SWEEPDECK_CONFIG).")
    top = validate(TOP_FIELDS, data, cfg, "")
    local = Profile("local", "local", validate(fields_for("local"), top["local"], cfg, "local"))
    profiles = {str(name): _load_profile(cfg, name, body) for name, body in (top["profiles"] or {}).items()}
    for binding, key in (top["keys"] or {}).items():
        if not isinstance(key, str) or not key:
            raise ConfigError(cfg, f"keys.{binding}", "a key name such as ctrl+n or f5", key)
    default_profile = top["default_profile"]
    if default_profile and default_profile not in profiles and default_profile != "local":
        raise ConfigError(cfg, "default_profile", "the name of a profile under 'profiles'", default_profile)
    settings = Settings(
        path=cfg if cfg.exists() else None,
        catalog_dir=_catalog_dir(cfg, catalog_dir, top["catalog_dir"]),
        default_backend=top["default_backend"],
        default_profile=default_profile,
        keys=dict(top["keys"] or {}),
        theme=top["theme"],
        log_line_cap=top["log_line_cap"],
        local=local,
        profiles=profiles,
    )
    return settings


def _load_profile(cfg: Path, name: Any, body: Any) -> Profile:
    """One entry under ``profiles:``, checked (name, mapping, backend) before its fields are validated."""
    where = f"profiles.{name}"
    if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name):
        raise ConfigError(cfg, where, "a profile name of letters, digits, '-', '_' and '.'", name)
    if name == "local":
        raise ConfigError(
            cfg, where, "a name other than 'local' (configure the local backend under the top-level 'local:' key)"
        )
    if not isinstance(body, dict):
        raise ConfigError(cfg, where, "a mapping with at least 'backend'", body)
    backend = body.get("backend")
    if backend not in BACKENDS:
        raise ConfigError(cfg, f"{where}.backend", "one of " + ", ".join(BACKENDS), backend)
    return Profile(str(name), backend, validate_profile(backend, body, cfg, where))


def _catalog_dir(cfg: Path, given: str | Path | None, configured: Any) -> Path | None:
    """The catalog directory: ``--catalog-dir`` (``given``) wins over the file's ``catalog_dir`` (``configured``)."""
    if given:
        cat_dir = Path(given).expanduser()
        if not cat_dir.is_dir():
            raise SweepdeckError(
                f"Catalog directory {cat_dir} does not exist.", "Pass an existing directory to --catalog-dir."
            )
        return cat_dir
    if not configured:
        return None
    cat_dir = Path(configured).expanduser()
    if not cat_dir.is_absolute():
        # Relative to the config file, not to wherever sweepdeck is started.
        cat_dir = cfg.parent / cat_dir
    if not cat_dir.is_dir():
        raise ConfigError(cfg, "catalog_dir", "an existing directory", configured)
    return cat_dir

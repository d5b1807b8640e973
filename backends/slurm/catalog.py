"""The models of an HPC profile: discovered in the cluster's Hugging Face hub, overridden by ``models.json``.

Like the Alvis ``vllm-connect.sh`` (v0.2), models are found over SSH in the
cluster's shared Hugging Face cache (``<hub>/models--ORG--NAME/snapshots/<rev>/``,
the snapshot ``refs/main`` names, else the newest), so every model the cluster
holds can be served. ``models.json`` then only overrides::

    {
      "_comment": "keys starting with _ are notes and ignored",
      "gpt-oss-20b": {"path": "/mimer/.../snapshots/cbf3.../", "max_model_len": 10000,
                      "description": "GPT OSS 20B model"}
    }

An entry matches a discovered model by ``org/name``, by ``name`` alone, or by
path, and replaces its ``max_model_len``, ``description`` (and ``path``); an
entry that matches none is a model of its own (a checkpoint outside the hub).
A discovered model's ``max_model_len`` is the original's default for its size
(1-7B 4096, 8-13B 8192, 14-20B 10000, 21-34B 16384, 35B+ 32768, otherwise
8192), never more than the model's own ``max_position_embeddings`` read from its
``config.json``, which is also kept as the model's limit.

The scan is cached per profile (``$XDG_CACHE_HOME/sweepdeck/slurm/<profile>.hub.json``)
and only repeated on demand (``--refresh-models``), so listing and pre-flight
need no SSH round trip. ``path`` is passed to the server command as one quoted
argument, whatever characters it holds.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from config.errors import SweepdeckError

#: The shared Hugging Face cache on Alvis, where the original discovers models.
ALVIS_HUB = "/mimer/NOBACKUP/Datasets/LLM/huggingface/hub"
#: The original job script's server command on Alvis (its SIF_IMAGE + ``apptainer exec``).
ALVIS_CONTAINER = "apptainer exec /apps/containers/vLLM/vllm-0.11.0.sif vllm serve"

_HF_CACHE = re.compile(r"models--([^/]+)--([^/]+)/")
_HUB_DIR = re.compile(r"^models--(?P<org>[A-Za-z0-9][A-Za-z0-9._-]*?)--(?P<name>[A-Za-z0-9._-]+)$")
_REVISION = re.compile(r"^[A-Za-z0-9._-]+$")
CACHE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ClusterModel:
    """One model the profile can serve.

    Attributes:
        name: What ``-m`` takes: ``org/name`` for a discovered model, the
            ``models.json`` key otherwise.
        path: The weights' directory on the cluster.
        max_model_len: The length a run starts with (an override or the
            default for the model's size).
        description: Free text from models.json.
        context_limit: The model's own ``max_position_embeddings`` (its
            config.json), when the scan could read it.
        source: ``hub``, ``models.json`` or ``hub+models.json``.
    """

    name: str
    path: str
    max_model_len: int | None = None
    description: str = ""
    context_limit: int | None = None
    source: str = "models.json"

    @property
    def served_name(self) -> str:
        """What clients ask for: ``org/model`` from a Hugging Face cache path, else the name.

        Mirrors the original job script's ``sed`` over ``models--ORG--NAME/``.
        """
        m = _HF_CACHE.search(self.path)
        return f"{m.group(1)}/{m.group(2)}" if m else self.name

    @property
    def provider(self) -> str:
        """The group a listing puts it in: the organisation, from the name or the hub path."""
        if "/" in self.name:
            return self.name.split("/", 1)[0]
        m = _HF_CACHE.search(self.path)
        return m.group(1) if m else "models.json"

    @property
    def short(self) -> str:
        return self.name.rsplit("/", 1)[-1]


class ModelNotInCatalog(SweepdeckError):
    """The model is neither discovered nor in models.json; ``available`` lists what is."""

    def __init__(self, name: str, catalog: ClusterCatalog) -> None:
        where = "the cluster's models" if catalog.discovered else "models.json"
        super().__init__(f"Model '{name}' not found in {where}", "")
        self.name = name
        self.available = catalog.listing()


@dataclass
class ClusterCatalog:
    path: Path | None
    models: dict[str, ClusterModel]
    #: Where the discovered models came from (None: no discovery).
    hub: str | None = None
    scanned: str = ""

    @property
    def discovered(self) -> bool:
        return self.hub is not None

    def find(self, name: str) -> ClusterModel | None:
        """A model by exact name, any case, its short name (when unique) or its served name."""
        if name in self.models:
            return self.models[name]
        low = name.lower()
        for key in (lambda m: m.name.lower(), lambda m: m.short.lower(), lambda m: m.served_name.lower()):
            hits = [m for m in self.models.values() if key(m) == low]
            if len(hits) == 1:
                return hits[0]
        return None

    def get(self, name: str) -> ClusterModel:
        found = self.find(name)
        if found is None:
            raise ModelNotInCatalog(name, self)
        return found

    def listing(self) -> list[str]:
        """``name: description`` lines, as the original's models.json listing and error message print them."""
        return [f"{m.name}: {m.description}" if m.description else m.name for m in self.models.values()]

    def grouped(self) -> list[tuple[str, list[tuple[int, ClusterModel]]]]:
        """Models by provider (case-insensitive order), numbered on from 1 across the groups."""
        groups: dict[str, list[ClusterModel]] = {}
        for model in self.models.values():
            groups.setdefault(model.provider, []).append(model)
        out = []
        n = 0
        for provider in sorted(groups, key=str.lower):
            rows = []
            for model in sorted(groups[provider], key=lambda m: m.short.lower()):
                n += 1
                rows.append((n, model))
            out.append((provider, rows))
        return out

    def numbered(self) -> list[ClusterModel]:
        """The models in listing order (index 0 is number 1)."""
        return [m for _, rows in self.grouped() for _, m in rows]

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None


# ------------------------------------------------------------------ models.json


def load_models(path: str | Path | None) -> ClusterCatalog:
    """Read a models.json; ``_``-prefixed keys are notes and skipped.

    Raises:
        SweepdeckError: missing or malformed file, naming the entry and what is expected.
    """
    if path is None:
        return ClusterCatalog(None, {})
    file = Path(path).expanduser()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepdeckError(f"Models catalog {file} does not exist.",
                             "Set 'models' in the profile to your models.json.") from None
    except UnicodeDecodeError:
        raise SweepdeckError(f"{file} is not a UTF-8 text file.", f"Fix {file} and try again.") from None
    except json.JSONDecodeError as exc:
        raise SweepdeckError(f"{file} is not valid JSON (line {exc.lineno}: {exc.msg}).",
                             f"Fix {file} and try again.") from None
    if not isinstance(data, dict):
        raise SweepdeckError(f"{file}: expected an object of model name -> {{path, max_model_len, description}}.")
    models: dict[str, ClusterModel] = {}
    for name, entry in data.items():
        if name.startswith("_"):
            continue
        models[name] = _entry(file, name, entry)
    return ClusterCatalog(file, models)


def _entry(file: Path, name: str, entry: Any) -> ClusterModel:
    where = f"{file}: {name!r}"
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"].strip():
        raise SweepdeckError(f"{where}: expected an object with a 'path' string.", f"Fix {file} and try again.")
    mml = entry.get("max_model_len")
    if mml is not None and (isinstance(mml, bool) or not isinstance(mml, int) or mml <= 0):
        raise SweepdeckError(f"{where}: max_model_len must be a positive integer, got {mml!r}.",
                             f"Fix {file} and try again.")
    desc = entry.get("description") or ""
    if not isinstance(desc, str):
        raise SweepdeckError(f"{where}: description must be a string.", f"Fix {file} and try again.")
    return ClusterModel(name, entry["path"], mml, desc)


# ------------------------------------------------------------------ discovery


def size_in_billions(name: str) -> float | None:
    """The parameter count a model's name states (``gpt-oss-20b`` 20, ``Mixtral-8x7B`` 56, ``SmolLM2-135M`` 0.135)."""
    m = re.search(r"(?<![\dA-Za-z.])(\d+)x(\d+(?:\.\d+)?)[bB](?![A-Za-z])", name)
    if m:
        return int(m.group(1)) * float(m.group(2))
    m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)\s?([bBmM])(?![A-Za-z])", name)
    if not m:
        return None
    value = float(m.group(1))
    return value if m.group(2) in "bB" else value / 1000


def default_max_model_len(name: str) -> int:
    """The original's default max_model_len for a model of this name's size (8192 when the name gives none)."""
    size = size_in_billions(name)
    if size is None or size < 1:
        return 8192
    for upper, length in ((8, 4096), (14, 8192), (21, 10000), (35, 16384)):
        if size < upper:
            return length
    return 32768


# Lists every models--ORG--NAME of the hub with the snapshot to use (refs/main, else the
# newest) and the max_position_embeddings of its config.json. The hub path is "$1":
# passed as an argument, never spliced into the script.
HUB_SCAN = r"""
cd -- "$1" 2>/dev/null || { echo "NOHUB"; exit 0; }
for m in models--*; do
  [ -d "$m/snapshots" ] || continue
  snap=""
  if [ -f "$m/refs/main" ]; then
    ref=$(head -n 1 "$m/refs/main" 2>/dev/null)
    if [ -n "$ref" ] && [ -d "$m/snapshots/$ref" ]; then snap="$ref"; fi
  fi
  if [ -z "$snap" ]; then snap=$(ls -1t -- "$m/snapshots" 2>/dev/null | head -n 1); fi
  [ -n "$snap" ] || continue
  mpe=$(grep -o '"max_position_embeddings"[[:space:]]*:[[:space:]]*[0-9]*' "$m/snapshots/$snap/config.json" \
        2>/dev/null | head -n 1 | sed 's/.*://; s/[^0-9]//g')
  printf 'MODEL\t%s\t%s\t%s\n' "$m" "$snap" "$mpe"
done
echo "END"
"""


def hub_scan_argv(hub: str) -> list[str]:
    """The remote argv of a hub scan (``sh -c SCRIPT sh HUB``)."""
    return ["sh", "-c", HUB_SCAN, "sh", hub]


def parse_hub_scan(text: str) -> list[dict[str, Any]] | None:
    """The scan's rows (``dir``, ``snapshot``, ``max_position_embeddings``); None when the hub does not exist.

    Lines that are not well-formed rows (odd directory names) are skipped.
    """
    rows = []
    for line in text.splitlines():
        if line.strip() == "NOHUB":
            return None
        parts = line.split("\t")
        if len(parts) != 4 or parts[0] != "MODEL":
            continue
        _, folder, snapshot, mpe = parts
        if not _HUB_DIR.match(folder) or not _REVISION.match(snapshot):
            continue
        limit = int(mpe) if mpe.isdigit() else None
        rows.append({"dir": folder, "snapshot": snapshot, "max_position_embeddings": limit})
    return rows


def hub_models(hub: str, rows: Iterable[dict[str, Any]]) -> dict[str, ClusterModel]:
    """The discovered models of a scan, by ``org/name``."""
    out: dict[str, ClusterModel] = {}
    for row in rows:
        m = _HUB_DIR.match(str(row.get("dir", "")))
        if not m:
            continue
        name = f"{m['org']}/{m['name']}"
        limit = row.get("max_position_embeddings")
        limit = limit if isinstance(limit, int) and limit > 0 else None
        default = default_max_model_len(m["name"])
        out[name] = ClusterModel(
            name=name,
            path=f"{hub.rstrip('/')}/{row['dir']}/snapshots/{row['snapshot']}/",
            max_model_len=min(default, limit) if limit else default,
            context_limit=limit,
            source="hub",
        )
    return out


def merge(discovered: dict[str, ClusterModel], overrides: ClusterCatalog) -> dict[str, ClusterModel]:
    """Discovered models with the models.json overrides applied; unmatched entries are models of their own."""
    models = dict(discovered)
    by_path = {m.path.rstrip("/"): k for k, m in models.items()}
    probe = ClusterCatalog(None, models)
    for key, entry in overrides.models.items():
        target = by_path.get(entry.path.rstrip("/"))
        if target is None:
            found = probe.find(key)
            target = found.name if found is not None else None
        if target is None:
            models[key] = entry
            continue
        base = models[target]
        models[target] = replace(
            base,
            path=entry.path or base.path,
            max_model_len=entry.max_model_len or base.max_model_len,
            description=entry.description or base.description,
            source="hub+models.json",
        )
    return models


# ------------------------------------------------------------------ per-profile cache


def hub_dir(profile: Any) -> str | None:
    """The profile's hub directory: ``hub``, or the Alvis hub for a profile named ``alvis``."""
    hub = profile.get("hub")
    if hub:
        return str(hub)
    return ALVIS_HUB if getattr(profile, "name", "") == "alvis" else None


def cache_path(profile_name: str) -> Path:
    from platformdirs import user_cache_path

    return user_cache_path("sweepdeck") / "slurm" / f"{profile_name}.hub.json"


def _host_of(profile: Any) -> str:
    return f"{profile.get('ssh_user') or ''}@{profile.get('ssh_host')}:{profile.get('ssh_port') or ''}"


def read_cache(profile: Any) -> dict[str, Any] | None:
    """The profile's saved scan, if it is for the same hub and host (else None: scan again)."""
    try:
        data = json.loads(cache_path(profile.name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("rows"), list):
        return None
    if data.get("hub_setting") != hub_dir(profile) or data.get("host") != _host_of(profile):
        return None
    return data


def write_cache(profile: Any, hub: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Save a scan of ``hub`` (the expanded path) for ``profile``."""
    data = {
        "version": CACHE_VERSION, "host": _host_of(profile), "hub_setting": hub_dir(profile), "hub": hub, "rows": rows,
        "scanned": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    path = cache_path(profile.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return data


def load_profile_catalog(profile: Any) -> ClusterCatalog:
    """models.json plus the profile's cached hub scan (no network; no cache: models.json only).

    Raises:
        SweepdeckError: a malformed models.json.
    """
    overrides = load_models(profile.get("models"))
    cached = read_cache(profile) if hub_dir(profile) else None
    if cached is None:
        return overrides
    hub = str(cached["hub"])
    models = merge(hub_models(hub, cached["rows"]), overrides)
    return ClusterCatalog(overrides.path, models, hub=hub, scanned=str(cached.get("scanned", "")))


async def refresh_profile_catalog(remote: Any, profile: Any, *, force: bool = False) -> ClusterCatalog:
    """Scan the cluster's hub over SSH when there is no cached scan (or ``force``); the merged catalog.

    Raises:
        SweepdeckError: the hub does not exist on the cluster, or the scan failed.
    """
    hub = hub_dir(profile)
    if hub and (force or read_cache(profile) is None):
        where = await remote.expand(hub)
        res = await remote.run(hub_scan_argv(where), timeout=120.0)
        rows = parse_hub_scan(res.stdout) if res.ok else None
        if not res.ok:
            raise SweepdeckError(f"Scanning {where} on {profile.get('ssh_host')} failed: {res.stderr.strip()[:200]}",
                                 "Check the profile's hub setting.")
        if rows is None:
            raise SweepdeckError(
                f"The model hub {where} does not exist on {profile.get('ssh_host')}.",
                f"Set 'hub' in profile {profile.name} to the cluster's Hugging Face hub directory "
                "(the folder with models--ORG--NAME), or leave models to models.json.",
            )
        write_cache(profile, where, rows)
    return load_profile_catalog(profile)

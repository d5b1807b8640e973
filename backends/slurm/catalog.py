"""The ``models.json`` catalog of an HPC profile (Alvis format).

::

    {
      "_comment": "keys starting with _ are notes and ignored",
      "gpt-oss-20b": {"path": "/mimer/.../snapshots/cbf3.../", "max_model_len": 10000,
                      "description": "GPT OSS 20B model"}
    }

``path`` is where the weights are on the cluster's filesystem; it is passed to
the server command as one quoted argument, whatever characters it holds.

TODO: Implement automatic model discovery by scanning
/mimer/NOBACKUP/Datasets/LLM/huggingface/hub/ (models.json would then only
hold overrides, as its ``_comment`` already says).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from config.errors import SweepdeckError

_HF_CACHE = re.compile(r"models--([^/]+)--([^/]+)/")


@dataclass(frozen=True, slots=True)
class ClusterModel:
    """One ``models.json`` entry."""

    name: str
    path: str
    max_model_len: int | None = None
    description: str = ""

    @property
    def served_name(self) -> str:
        """What clients ask for: ``org/model`` from a Hugging Face cache path, else the name.

        Mirrors the original job script's ``sed`` over ``models--ORG--NAME/``.
        """
        m = _HF_CACHE.search(self.path)
        return f"{m.group(1)}/{m.group(2)}" if m else self.name


class ModelNotInCatalog(SweepdeckError):
    """The model is not in models.json; ``available`` lists what is."""

    def __init__(self, name: str, catalog: "ClusterCatalog") -> None:
        super().__init__(f"Model '{name}' not found in models.json", "")
        self.name = name
        self.available = catalog.listing()


@dataclass
class ClusterCatalog:
    path: Path | None
    models: dict[str, ClusterModel]

    def get(self, name: str) -> ClusterModel:
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotInCatalog(name, self) from None

    def listing(self) -> list[str]:
        """``name: description`` lines, as ``--list-models`` prints them."""
        return [f"{m.name}: {m.description}" if m.description else m.name for m in self.models.values()]

    def __contains__(self, name: str) -> bool:
        return name in self.models


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
        raise SweepdeckError(f"Models catalog {file} does not exist.", "Set 'models' in the profile to your models.json.") from None
    except json.JSONDecodeError as exc:
        raise SweepdeckError(f"{file} is not valid JSON (line {exc.lineno}: {exc.msg}).", f"Fix {file} and try again.") from None
    if not isinstance(data, dict):
        raise SweepdeckError(f"{file}: expected an object of model name -> {{path, max_model_len, description}}.")
    models: dict[str, ClusterModel] = {}
    for name, entry in data.items():
        if name.startswith("_"):
            continue
        where = f"{file}: {name!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"].strip():
            raise SweepdeckError(f"{where}: expected an object with a 'path' string.", f"Fix {file} and try again.")
        mml = entry.get("max_model_len")
        if mml is not None and (isinstance(mml, bool) or not isinstance(mml, int) or mml <= 0):
            raise SweepdeckError(f"{where}: max_model_len must be a positive integer, got {mml!r}.", f"Fix {file} and try again.")
        desc = entry.get("description") or ""
        if not isinstance(desc, str):
            raise SweepdeckError(f"{where}: description must be a string.", f"Fix {file} and try again.")
        models[name] = ClusterModel(name, entry["path"], mml, desc)
    return ClusterCatalog(file, models)

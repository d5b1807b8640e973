"""The one function that renders sweepdeck's own templates.

``render("tekton/tasks/guidellm-load-generator.yaml", **values)`` renders a file
under this package with Jinja2 and ``StrictUndefined``: a value the template
needs but was not given is an error naming the template and the value, never
an empty string in a manifest.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

TEMPLATE_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def environment():
    """The shared Jinja2 environment (loader over this package, strict undefined)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def template_path(name: str) -> Path:
    """Absolute path of a packaged template (``tekton/blis/pipeline.yaml.j2``)."""
    return TEMPLATE_DIR / name


def render(name: str, **values: Any) -> str:
    """Render the packaged template ``name`` with ``values``.

    Raises:
        SweepdeckError: unknown template or a value the template needs is missing.
    """
    import jinja2

    from config.errors import SweepdeckError

    try:
        return environment().get_template(name).render(**values)
    except jinja2.TemplateNotFound:
        raise SweepdeckError(f"No template {name!r} in {TEMPLATE_DIR}.") from None
    except jinja2.UndefinedError as exc:
        raise SweepdeckError(f"Template {name}: {exc.message}.", "Pass the missing value.") from None

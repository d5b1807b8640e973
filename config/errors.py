"""The one error type the user sees.

Every failure caused by user input or the environment is raised as a
:class:`SweepdeckError`. The CLI and the TUI print ``message`` and ``hint`` and
never a traceback.
"""

from __future__ import annotations


class SweepdeckError(Exception):
    """A failure the user can act on.

    Args:
        message: What went wrong, in one sentence.
        hint: What to do about it (may be empty).
    """

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  {self.hint}" if self.hint else self.message


class ConfigError(SweepdeckError):
    """A configuration or catalog file is malformed.

    The message always names the file, the key and what was expected.
    """

    def __init__(self, path: object, key: str, expected: str, got: object = None) -> None:
        where = f"{path}" + (f": {key}" if key else "")
        msg = f"{where}: expected {expected}"
        if got is not None:
            msg += f", got {got!r}"
        super().__init__(msg, f"Fix {path} and try again.")
        self.path = path
        self.key = key


class UnknownModel(SweepdeckError):
    """A model name matches nothing in the catalog."""

    def __init__(self, name: str, suggestions: list[str], available: list[str] | None = None) -> None:
        hint = ""
        if suggestions:
            hint = "Did you mean: " + ", ".join(suggestions) + "?"
        elif available:
            hint = "Known models: " + ", ".join(available)
        super().__init__(f"Unknown model {name!r}.", hint)
        self.name = name
        self.suggestions = suggestions


class AmbiguousModel(SweepdeckError):
    """An alias names more than one model; the user must choose."""

    def __init__(self, alias: str, prompt: str, options: list[dict]) -> None:
        labels = ", ".join(f"{o['id']} ({o.get('label', '')})" for o in options)
        super().__init__(
            f"{alias!r} is ambiguous. {prompt}",
            f"Name one of: {labels}",
        )
        self.alias = alias
        self.prompt = prompt
        self.options = options


class UnknownWorkload(SweepdeckError):
    """A workload name matches no preset name or keyword."""

    def __init__(self, name: str, available: list[str], suggestions: list[str] | None = None) -> None:
        close = f"Did you mean: {', '.join(suggestions)}? " if suggestions else ""
        super().__init__(
            f"Unknown workload {name!r}.",
            close + "Choose one of: " + ", ".join(available) + " (or a custom workload: prompt=N output=N).",
        )
        self.name = name
        self.suggestions = list(suggestions or [])

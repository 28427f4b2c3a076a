"""Exception hierarchy of thelper.

Every error raised for a user mistake derives from :class:`ThelperError`. The CLI turns these
into a one-line ``error:`` message (no traceback unless ``--traceback``) and an exit code:
:class:`ConfigError` and :class:`ComponentNotFoundError` exit with 2 (config/usage error), the
others with 1 (runtime failure).
"""

from __future__ import annotations

__all__ = [
    "ThelperError",
    "ConfigError",
    "PluginError",
    "ComponentNotFoundError",
    "ComponentBuildError",
    "CheckpointError",
    "DataError",
    "SessionError",
    "NonFiniteLossError",
    "ConfigIssue",
]

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a configuration.

    Attributes:
        path: Dotted config path of the offending value (``trainer.optimization.optimizer``).
        message: What is wrong, with the received value and a hint when one exists.
        file: File the value came from, if known (``None`` for ``--set`` overrides).
        line: 1-based line in ``file``, if known.
        column: 1-based column in ``file``, if known.
        source: ``"file"``, ``"--set"`` or ``"env"``: where the value came from.
    """

    path: str
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    source: str = "file"

    def format(self) -> str:
        """Render as ``file:line:col: path: message`` (the location part only when known)."""
        where = ""
        if self.source != "file":
            where = f"({self.source}) "
        elif self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        path = self.path or "<root>"
        return f"{where}{path}: {self.message}"

    def to_dict(self) -> dict:
        """Plain-dict form for ``--format json``."""
        return {
            "path": self.path,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "source": self.source,
        }


class ThelperError(Exception):
    """Base class of every error thelper raises for a user-facing problem."""

    exit_code: int = 1


class ConfigError(ThelperError):
    """A configuration (file, override or CLI argument) is invalid.

    Attributes:
        issues: Every problem found, each with its config path.
    """

    exit_code = 2

    def __init__(self, message: str, issues: list[ConfigIssue] | None = None) -> None:
        super().__init__(message)
        self.issues: list[ConfigIssue] = list(issues or [])


class PluginError(ThelperError):
    """A plugin failed to import or to register its components."""


class LocalPluginError(PluginError):
    """A local plugin module named on the command line (``-p MODULE``) does not load: a
    usage error (exit code 2)."""

    exit_code = 2


class ComponentNotFoundError(ThelperError, KeyError):
    """A ``type:`` name is not registered under the requested kind."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ComponentBuildError(ThelperError):
    """A registered component could not be imported or instantiated."""


class CheckpointError(ThelperError):
    """A checkpoint is missing, truncated, corrupted or unsafe to load."""


class DataError(ThelperError):
    """A dataset or sample could not be loaded."""


class SessionError(ThelperError):
    """A session directory cannot be created, written or resumed."""

    exit_code = 2



class NonFiniteLossError(ThelperError):
    """The training loss became NaN or infinite (the message names epoch and step)."""

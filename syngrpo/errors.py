"""Errors a user can act on: each message says what was wrong and what to do."""

from __future__ import annotations


class SyngrpoError(Exception):
    """Base class of every error syngrpo raises on purpose."""


class ConfigError(SyngrpoError, ValueError):
    """A configuration value is missing, misspelt or out of range."""


class UnknownPluginError(SyngrpoError, KeyError):
    """A config named a plugin that no installed package registers."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(SyngrpoError):
    """Two plugins registered the same name for the same kind."""


class MissingExtraError(SyngrpoError, ImportError):
    """A plugin's heavy dependency is not installed."""

    def __init__(self, what: str, module: str, extra: str, hint: str = "") -> None:
        msg = (
            f"{what} needs the Python package {module!r}, which is not installed. "
            f"Install it with: pip install 'syngrpo[{extra}]'"
        )
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)
        self.module = module
        self.extra = extra


def require(module: str, *, extra: str, what: str, hint: str = ""):
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised through plugins
        raise MissingExtraError(what, module, extra, hint) from exc

"""Loading, overriding and validating configs.

Configs are pydantic models validated once at the edge (the CLI), then passed
as typed values.  Every error names the dotted key that is wrong and why, and
says where the value came from (which file, or which ``--set``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from syngrpo.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading ``1e-6`` as a float.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-6``), so ``lr: 1e-6``
    and ``--set trainer.lr=1e-6`` would arrive as the *string* "1e-6"; in a typed
    field pydantic converts it, but in a free ``options`` mapping a plugin would get
    a string.  YAML 1.2 (and every user) reads it as a number.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """YAML text to Python values (safe loader; ``1e-6`` is a float, see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = parse_yaml(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level, not {type(data).__name__}")
    return data


#: the key by which a config file names the file it is a variation of (see :func:`load_layered`)
EXTENDS = "extends"


def load_layered(path: str | Path) -> tuple[dict[str, Any], list[Path]]:
    """A config file with its ``extends:`` chain resolved, and the chain (this file first, then its bases).

    ``extends: ../rec_qwen2_5_vl_3b.yaml`` (a path relative to the file that says it) makes a file "that
    config, except ...": the base's mapping, with this file's keys merged over it section by section (a
    value, a list or ``null`` replaces the base's; a mapping is merged key by key). A variation that only
    lists what it changes cannot drift from its base when the base changes (the Table 1 rows, which had
    silently lost the paper config's ``max_pixels`` and ``parallel.strategy``). Bases may extend others;
    a cycle is an error. The key is the loader's: it never reaches validation or a dumped config.
    """
    chain: list[Path] = []
    p = Path(path)
    layers: list[dict[str, Any]] = []
    while True:
        if p.resolve() in [c.resolve() for c in chain]:
            raise ConfigError("config files extend each other in a cycle: "
                              + " -> ".join(str(c) for c in [*chain, p]))
        data = load_yaml(p)
        chain.append(p)
        base = data.pop(EXTENDS, None)
        layers.append(data)
        if base is None:
            break
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"config file {str(p)!r}: {EXTENDS} must be the path of another config file "
                              f"(relative to this one), not {base!r}")
        nxt = p.parent / base
        if not nxt.is_file():
            raise ConfigError(f"config file {str(p)!r} extends {base!r}, which does not exist ({str(nxt)!r})")
        p = nxt
    out: dict[str, Any] = {}
    for layer in reversed(layers):
        out = _merge(out, layer)
    return out, chain


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML: ``1e-6``, ``true``, ``[a, b]``)."""
    out = _deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key part")
        try:
            value = parse_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} holds a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def validate(model: type[M], data: dict[str, Any], *, source: str = "config") -> M:
    """Validate ``data`` into ``model``; a failure lists every bad key with its reason."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (misspelt? see docs/configuration.md)"
            lines.append(f"  {loc}: {msg}")
        raise ConfigError(f"invalid {source}:\n" + "\n".join(lines)) from None


def load_config(model: type[M], path: str | Path | None = None, overrides: Iterable[str] = (),
                *, defaults: dict[str, Any] | None = None) -> M:
    """Defaults, then the YAML file (over the files it ``extends``), then ``--set`` overrides; validated once."""
    data: dict[str, Any] = _deepcopy(defaults or {})
    source = "defaults"
    if path is not None:
        layered, chain = load_layered(path)
        layered, dropped = drop_redacted(layered)
        if dropped:
            log.info("%s: %s redacted (a run's config.yaml holds no secrets); taken from the environment, a "
                     "*_file key or --set instead", path, ", ".join(dropped))
        data = _merge(data, layered)
        source = f"config {str(path)!r}" + "".join(f" (extends {str(c)!r})" for c in chain[1:])
    overrides = list(overrides)
    if overrides:
        data = apply_overrides(data, overrides)
        source += " with overrides " + " ".join(overrides)
    return validate(model, data, source=source)


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (written into every run directory), its secrets redacted (:func:`redact_secrets`)."""
    return yaml.safe_dump(redact_secrets(cfg.model_dump(mode="json")), sort_keys=False)


# ---- secrets -----------------------------------------------------------------------------------------
#: what a secret is replaced by wherever a config is written (config.yaml, trackers)
REDACTED = "<redacted>"
#: keys whose values are secrets, at any depth and in free-form options too: ``token``, ``api_key``,
#: ``password``, ``secret``, ``credentials`` and ``<anything>_<one of those>`` (``hf_token``, ``client_secret``);
#: not ``token_file`` or ``max_new_tokens``
SECRET_KEY = re.compile(r"(?:^|_)(?:token|api_?key|password|passwd|secret|credentials?)$", re.IGNORECASE)
#: the password of a URL (``postgresql://user:PASSWORD@host/db``)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]+):[^\s/@]+@", re.IGNORECASE)


def redact_secrets(data: Any) -> Any:
    """A copy of plain config data with every secret replaced by :data:`REDACTED`.

    Secrets are the values of :data:`SECRET_KEY` keys and passwords inside URLs.  A run directory is
    copied, shared and uploaded (config.yaml, W&B, MLflow), so no secret is ever written in clear there;
    a resumed run gets its secrets again from the environment, a ``*_file`` key, or ``--set``
    (:func:`load_config` drops redacted values, so the plugin's own default applies).
    """
    if isinstance(data, dict):
        return {k: (REDACTED if isinstance(k, str) and SECRET_KEY.search(k) and isinstance(v, str) and v
                    else redact_secrets(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_secrets(v) for v in data]
    if isinstance(data, str):
        return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", data)
    return data


def drop_redacted(data: dict[str, Any], *, where: str = "") -> tuple[dict[str, Any], list[str]]:
    """``data`` without the values :func:`redact_secrets` replaced, and their dotted keys.

    A config written by a run (its config.yaml, read again by ``--resume``) holds :data:`REDACTED` where a
    secret was: the key is dropped, so the secret comes from where it would without it (``synthesis.token``:
    ``synthesis.token_file`` or ``$SYNGRPO_SERVER_TOKEN``; a plugin: its environment variable), or from
    ``--set``.  A URL whose password was redacted cannot be completed that way: a :class:`ConfigError` names it.
    """
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for k, v in data.items():
        key = f"{where}.{k}" if where else str(k)
        if v == REDACTED:
            dropped.append(key)
        elif isinstance(v, dict):
            out[k], more = drop_redacted(v, where=key)
            dropped += more
        elif (isinstance(v, str) and REDACTED in v) or (isinstance(v, list)
                                                         and any(isinstance(i, str) and REDACTED in i for i in v)):
            raise ConfigError(f"{key}: the password in this URL was redacted when the run wrote its config "
                              f"(secrets are never stored in a run directory); give it again with --set {key}=...")
        else:
            out[k] = v
    return out, dropped


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = _deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _deepcopy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, dict) else (list(v) if isinstance(v, list) else v) for k, v in d.items()}

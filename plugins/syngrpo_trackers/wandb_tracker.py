"""Weights & Biases tracker: one W&B run per syngrpo run directory, resumed with it.

The W&B run id is kept in ``<run dir>/wandb_run_id``, so ``syngrpo train --resume``
continues the same W&B run instead of starting a new one.  Offline use
(``WANDB_MODE=offline`` or ``mode: offline``) writes under ``<run dir>/wandb``
and syncs later with ``wandb sync``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from syngrpo.errors import ConfigError, require

ID_FILE = "wandb_run_id"


class WandbTracker:
    """Options: ``project`` (default ``syngrpo``), ``entity``, ``group``, ``tags``, ``mode``
    (``online``/``offline``/``disabled``; default: W&B's own, i.e. ``WANDB_MODE``), ``name`` (default: the
    run directory's name); any other option goes to ``wandb.init``."""

    def __init__(self, *, project: str = "syngrpo", entity: str | None = None, group: str | None = None,
                 tags: Sequence[str] = (), mode: str | None = None, name: str | None = None,
                 **init_kwargs: Any) -> None:
        self.wandb = require("wandb", extra="wandb", what="the wandb tracker (logging.trackers: [wandb])")
        if mode not in (None, "online", "offline", "disabled"):
            raise ConfigError(f"wandb tracker: mode must be online, offline or disabled, got {mode!r}")
        self.settings = dict(project=project, entity=entity, group=group, tags=list(tags) or None, mode=mode,
                             name=name, **init_kwargs)
        self.run: Any = None

    def start(self, *, run_dir: Path, run_name: str, config: Mapping[str, Any], start_step: int) -> None:
        id_file = Path(run_dir) / ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else _new_run_id()
        id_file.write_text(run_id)
        kwargs = {k: v for k, v in self.settings.items() if v is not None}
        kwargs.setdefault("name", run_name)
        self.run = self.wandb.init(id=run_id, resume="allow", dir=str(run_dir), config=dict(config), **kwargs)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        table = self.wandb.Table(columns=list(columns), data=[[_cell(v) for v in r] for r in rows])
        self.run.log({name: table}, step=step)

    def log_images(self, name: str, images: Sequence[tuple[str, str]], step: int) -> None:
        self.run.log({name: [self.wandb.Image(path, caption=caption) for path, caption in images]}, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def _new_run_id() -> str:
    """A W&B-style run id: 8 characters of lower-case letters and digits."""
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _cell(value: Any) -> Any:
    """W&B tables take numbers and strings; anything else as its text."""
    return value if isinstance(value, (int, float, str)) or value is None else str(value)

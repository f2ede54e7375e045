"""Where a policy's weights come from: a hub id, a directory, a shipped checkpoint, or ``tiny`` (built here).

``model.policy`` is resolved once, by this function, wherever a command needs the weights (training, the
warm start alone, the summary that names what a run started from).
"""

from __future__ import annotations

import logging
import os
import shutil

from syngrpo.config import SHIPPED_POLICIES, ModelConfig
from syngrpo.errors import ConfigError
from syngrpo.rundir.progress import phase

log = logging.getLogger(__name__)


def resolve_policy(model: ModelConfig) -> str:
    """The policy's hub id or directory; ``tiny`` builds the tiny random policy on first use; a shipped name
    (``tiny-warm-start``) is its package directory."""
    if model.policy in SHIPPED_POLICIES:
        return str(SHIPPED_POLICIES[model.policy])
    if model.policy != "tiny":
        looks_like_a_path = model.policy.startswith(("/", "./", "../", "~")) or model.policy.count("/") > 1
        if looks_like_a_path and not os.path.isdir(os.path.expanduser(model.policy)):
            raise ConfigError(f"model.policy {model.policy!r}: no such directory (a hub id reads namespace/name; "
                              "`tiny` builds a tiny random policy)")
        return model.policy
    target = model.resolved_tiny_dir()
    if (target / "config.json").is_file():
        return str(target)
    from syngrpo.models.tiny_policy import build_tiny_policy  # transformers: only when a tiny policy is built

    log.info("building the tiny policy into %s", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    with phase("building the tiny policy"):  # its tokenizer is trained here: seconds on a loaded machine
        build_tiny_policy(tmp, seed=model.tiny_seed, family=model.tiny_family(), **model.tiny_options)
    try:
        tmp.rename(target)  # atomic: a concurrent build of the same policy loses the race harmlessly
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)

"""The sections of synthesized data: ``synthesis`` (online, through the data server) and ``offline`` (before training).

Both name the data server a run talks to and what it asks of it; the online mode is Syn-GRPO's
(paper §3.3), the offline one Table 1's "GRPO + Offline Generation" baseline.  Their own module of
the schema because together they are the trainer's side of the data server, whose own settings are
:mod:`syngrpo.synthesis.server.config` (:mod:`syngrpo.config.schema` assembles
:class:`~syngrpo.config.schema.TrainConfig`; ``syngrpo.config`` re-exports every name); every key is
documented in ``docs/configuration.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from syngrpo.config.io import StrictModel
from syngrpo.errors import ConfigError


class SynthesisConfig(StrictModel):
    """Online data synthesis through the data server (paper §3.3)."""

    #: ``off`` = plain GRPO; ``sync`` waits for each batch's images (Table 5 ablation); ``async`` never waits
    mode: Literal["off", "sync", "async"] = "async"
    #: smoothing weight of the moving average of diversity (the paper's gamma / beta; 0.7 in §4)
    gamma: float = Field(0.7, ge=0.0, le=1.0)
    smoothing: bool = True
    #: eq. 8 picks the description of the best-calibrated response; ``random`` is an ablation
    description_selection: Literal["diversity", "random"] = "diversity"
    #: synthesize from the original image each time, or from the latest synthesized version
    source: Literal["original", "latest"] = "original"
    transport: str = "aiohttp"
    transport_options: dict[str, Any] = Field(default_factory=dict)
    #: data-server URLs (several spread the load)
    servers: list[str] = Field(default_factory=list)
    #: bearer token; ``null`` reads ``token_file``, else ``$SYNGRPO_SERVER_TOKEN`` when set.  Never written in clear
    #: to a run directory (config.yaml and the trackers get ``<redacted>``): a resumed run needs the file or variable
    token: str | None = None
    #: a file whose first line is the token (keep it outside the run directory, readable by you only)
    token_file: str | None = None
    #: start a local ``syngrpo serve`` subprocess on 127.0.0.1 (the quickstart does)
    spawn_server: bool = False
    #: server config file for the spawned server (``null`` = the server's defaults)
    server_config: str | None = None
    #: keys of the spawned server's config to override (synthesizer, segmenter, workers ...)
    server: dict[str, Any] = Field(default_factory=dict)
    #: seconds the spawned server may take to start
    server_startup_timeout: float = Field(120.0, gt=0.0)
    #: options sent with every job to the synthesizer (steps, guidance ...)
    job_options: dict[str, Any] = Field(default_factory=dict)
    #: seconds the sync mode waits for a batch's jobs before going on with the originals
    sync_timeout: float = Field(120.0, gt=0.0)
    #: seconds after which an unanswered job is abandoned (the original stays)
    job_timeout: float = Field(900.0, gt=0.0)
    #: never more than this many jobs in flight (new submissions are skipped, not queued)
    max_in_flight: int = Field(64, ge=1)
    #: delete each finished job on the data server (rows and files) once its image is in the run directory, so
    #: the server's disk holds only the jobs in flight; ``false`` keeps them there until the server's retention
    delete_collected: bool = True
    #: seconds between health probes while the server is marked down
    health_interval: float = Field(5.0, ge=0.0)
    #: when synthesis has been down, or every job that finished failed, for ``max_failed_steps`` steps in a row
    #: (and at least ``failure_grace_s`` seconds): ``stop`` the run with an error or ``warn`` loudly and train on;
    #: a token the server refuses (401/403) does the same at once
    on_failure: Literal["stop", "warn"] = "stop"
    max_failed_steps: int = Field(20, ge=1)
    failure_grace_s: float = Field(60.0, ge=0.0)
    #: at the end of the run, the share of finished jobs that must have come back done; below it (or with no job
    #: done at all) the run ends as ``on_failure`` says: exit status 2 (``stop``, after the last checkpoint) or a warning
    min_done_share: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_token_source(self) -> SynthesisConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("give synthesis.token or synthesis.token_file, not both")
        return self

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare ``off`` as false
        return "off" if v is False else v

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def configured_token(self) -> str | None:
        """``token``, else the first line of ``token_file``; ``None`` when neither is given (the data server's
        rule then reads ``$SYNGRPO_SERVER_TOKEN``)."""
        if self.token is not None or self.token_file is None:
            return self.token
        path = Path(self.token_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"synthesis.token_file: cannot read {str(path)!r} ({exc})") from exc
        token = lines[0].strip() if lines else ""
        if not token:
            raise ConfigError(f"synthesis.token_file: {str(path)!r} is empty; its first line must be the token")
        return token


class OfflineConfig(StrictModel):
    """``syngrpo synth --offline``: the "GRPO + Offline Generation" baseline's data (Table 1).

    Descriptions are written before training by a describer plugin, the images synthesized through
    the data server named in ``synthesis`` (its ``transport``/``servers``, whatever ``synthesis.mode``
    says), and originals + synthesized samples written as one dataset file for plain GRPO.
    """

    #: describer plugin (``register_describers``): ``openai``, ``template``, ``policy``, ...
    describer: str = "template"
    describer_options: dict[str, Any] = Field(default_factory=dict)
    #: synthesized images per original (``--variants`` overrides it)
    variants: int = Field(1, ge=1)
    #: the originals' dataset file; ``null``: ``data.train``
    data: str | None = None
    #: where the originals' relative image paths start; ``null``: ``data.image_root``
    image_root: str | None = None
    #: originals drawn at random (seed ``seed``); ``null``: ``data.max_train_samples``
    max_samples: int | None = Field(None, ge=1)
    #: how long to wait for all images once every job is submitted
    timeout_s: float = Field(3600.0, gt=0.0)

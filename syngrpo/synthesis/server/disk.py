"""The disk budget: a submission is refused (429) before the store would pass its budget or the disk its floor.

Its own module because it is one rule with its own arithmetic, asked at submission and by
``/healthz``: what the store will hold is its files and database now, plus the most the result of
every queued or running job can take (:func:`~syngrpo.synthesis.server.store.result_bytes_bound`:
4 bytes a pixel, not the input's size, which a one-colour image makes tiny: 12 such jobs once
took ~87 MB of disk each against a budget that counted a few kB), plus the submissions being
written, plus the one asking.  Past ``max_store_bytes``: ``429 store_full``; leaving less than
``min_free_bytes`` free on the filesystem: ``429 disk_low``; both with ``Retry-After``.  What
happens when the disk fills anyway (507, re-queued results) is :mod:`.workers`'.
"""

from __future__ import annotations

import shutil

from syngrpo.synthesis.server.config import ServerConfig
from syngrpo.synthesis.server.store import JobStore
from syngrpo.synthesis.server.validation import ApiError

STORE_FULL_RETRY_S = 10
"""``Retry-After`` of a submission refused for disk (a client collecting and deleting frees room within steps)."""


class DiskBudget:
    """``max_store_bytes`` and ``min_free_bytes``, checked for each submission (one event loop: no lock)."""

    def __init__(self, config: ServerConfig, store: JobStore) -> None:
        self.config = config
        self.store = store
        self.reserved_bytes = 0  # what the submissions being written will take (input, and their results)
        self.typical_need = 0  # what the last stored job needed: /healthz says degraded while one would not fit
        self.refused = 0  # submissions refused with store_full or disk_low

    def refusal(self, need: int = 0) -> ApiError | None:
        """Why a submission needing ``need`` more bytes would be refused (``None``: it fits)."""
        cfg = self.config
        coming = self.store.pending_result_bytes() + self.reserved_bytes + need
        headers = {"Retry-After": str(STORE_FULL_RETRY_S)}
        if cfg.max_store_bytes is not None:
            used = self.store.bytes_used()
            if used + coming > cfg.max_store_bytes:
                return ApiError(429, "store_full",
                                f"the job store holds {used} bytes and its queued jobs may add up to {coming}; "
                                f"its budget is {cfg.max_store_bytes} (max_store_bytes). Finished jobs are deleted "
                                f"when clients collect them or after retention_s; retry in {STORE_FULL_RETRY_S} s",
                                headers=headers)
        if cfg.min_free_bytes:
            try:
                free = shutil.disk_usage(self.store.data_dir).free
            except OSError:
                return None
            if free - coming < cfg.min_free_bytes:
                return ApiError(429, "disk_low",
                                f"the job store's disk has {free} bytes free and its queued jobs may take up to "
                                f"{coming}; the server keeps {cfg.min_free_bytes} free (min_free_bytes); retry in "
                                f"{STORE_FULL_RETRY_S} s", headers=headers)
        return None

    def check(self, need: int) -> None:
        """Raise the refusal, if any (counted)."""
        refusal = self.refusal(need)
        if refusal is not None:
            self.refused += 1
            raise refusal

"""What ``GET /metrics`` says: the job service's gauges and counters in Prometheus text form.

Its own module because it only reads: the store's counts, sizes and run times, the service's
refusal counters and its workers' states, written out one metric after another.  Every name here
is documented in docs/data-server.md (``GET /metrics``); the numbers come from the modules that keep
them (:mod:`.store`, :mod:`.workers`, :mod:`.device_worker`).
"""

from __future__ import annotations

import math
import shutil
from typing import Any

from syngrpo.synthesis.server.calls import percentile
from syngrpo.synthesis.server.records import DELETE_REASONS


def metrics_text(service: Any) -> str:
    """Prometheus text exposition (version 0.0.4) of ``service``'s counters, its store and its workers.

    ``service`` is the :class:`~syngrpo.synthesis.server.workers.JobService` (typed loosely: that module
    imports this one; its :meth:`~syngrpo.synthesis.server.workers.JobService.metrics_text` calls this).
    """
    counts = service.store.count_by_state()
    kept = sum(counts.values())
    gone = service.store.counters()  # jobs deleted: the totals below never go back
    times = service.store.recent_seconds(service.config.metrics_window)
    mean = sum(times) / len(times) if times else math.nan
    p95 = percentile(times, 95)
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, value: float, labels: str = "") -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{labels} {_fmt(value)}")

    metric("syngrpo_queue_depth", "gauge", "Jobs waiting in the queue.", counts["queued"])
    metric("syngrpo_queue_capacity", "gauge", "Queued jobs beyond which submissions get 429.",
           service.config.queue_size)
    metric("syngrpo_jobs_running", "gauge", "Jobs a worker is running now.", counts["running"])
    metric("syngrpo_jobs_done_total", "counter", "Jobs finished with a new image.",
           counts["done"] + gone.get("deleted_done", 0))
    metric("syngrpo_jobs_failed_total", "counter", "Jobs that failed (error, time-out, label check).",
           counts["failed"] + gone.get("deleted_failed", 0))
    metric("syngrpo_jobs_cancelled_total", "counter", "Jobs cancelled by a client (or deleted before they ran).",
           counts["cancelled"] + gone.get("deleted_cancelled", 0))
    metric("syngrpo_submissions_rejected_total", "counter", "Submissions refused with 429 (queue full).",
           service.rejected)
    metric("syngrpo_submissions_storage_refused_total", "counter",
           "Submissions refused with 507 (the store's disk is full).", service.storage_refused)
    metric("syngrpo_submissions_store_full_total", "counter",
           "Submissions refused with 429 store_full or disk_low (max_store_bytes, min_free_bytes).",
           service.store_full_refused)
    metric("syngrpo_jobs_disk_retries_total", "counter",
           "Jobs put back in the queue because their result could not be written (full disk).", service.disk_retries)
    metric("syngrpo_clients_queued", "gauge", "Clients with jobs in the queue.", service.store.queued_clients())
    metric("syngrpo_store_jobs", "gauge", "Jobs the store keeps (rows, any state).", kept)
    metric("syngrpo_store_bytes", "gauge", "Bytes of the store on disk: job files and database.",
           service.store.bytes_used())
    if service.config.max_store_bytes is not None:
        metric("syngrpo_store_budget_bytes", "gauge", "The store's byte budget (max_store_bytes).",
               service.config.max_store_bytes)
    try:
        free = shutil.disk_usage(service.store.data_dir).free
    except OSError:
        free = math.nan
    metric("syngrpo_store_free_bytes", "gauge", "Free bytes on the store's filesystem.", free)
    lines.append("# HELP syngrpo_jobs_deleted_total Jobs deleted, rows and files, by why.")
    lines.append("# TYPE syngrpo_jobs_deleted_total counter")
    for reason in DELETE_REASONS:
        lines.append(f'syngrpo_jobs_deleted_total{{reason="{reason}"}} {gone.get(f"deleted_by_{reason}", 0)}')
    metric("syngrpo_calls_abandoned", "gauge", "Calls past their time-out whose thread still runs.",
           sum(len(w.abandoned) for w in service.workers))
    metric("syngrpo_job_seconds_mean", "gauge", "Mean run time of recent done jobs.", mean)
    metric("syngrpo_job_seconds_p95", "gauge", "95th percentile run time of recent done jobs.", p95)
    lines.append("# HELP syngrpo_workers Workers by state.")
    lines.append("# TYPE syngrpo_workers gauge")
    for state in ("loading", "ready", "busy", "draining", "broken"):
        n = sum(w.state == state for w in service.workers)
        lines.append(f'syngrpo_workers{{state="{state}"}} {n}')
    return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.6g}"


def connection_metrics_text(bodies: Any, shares: Any, connections: Any) -> str:
    """The request-level gauges and counters: request bodies in flight (:class:`~.admission.BodyBudget`),
    requests waiting their client's turn (:class:`~.admission.RequestShare`), connections
    (:class:`~.connections.ConnectionGuard`)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, value: float) -> None:
        lines.extend((f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {_fmt(value)}"))

    metric("syngrpo_request_body_bytes_in_flight", "gauge", "Decoded bytes of request bodies being read and checked.",
           bodies.used)
    metric("syngrpo_requests_busy_total", "counter", "Requests refused with 503 busy (bodies in flight at the cap).",
           bodies.refused)
    metric("syngrpo_requests_client_busy_total", "counter",
           "Requests refused with 429 client_busy (one client's bodies at its share).", bodies.refused_client)
    metric("syngrpo_requests_waiting", "gauge", "Requests waiting for their client's turn (client_concurrency).",
           shares.waiting_now())
    metric("syngrpo_requests_client_waiting_refused_total", "counter",
           "Requests refused with 429 client_busy: their client had client_waiting more waiting.", shares.refused)
    metric("syngrpo_connections_open", "gauge", "Connections open now.", connections.open)
    metric("syngrpo_connections_refused_total", "counter", "Connections closed at once (max_connections reached).",
           connections.refused)
    metric("syngrpo_connections_evicted_total", "counter", "Idle connections closed to make room for a new one.",
           connections.evicted)
    return "\n".join(lines) + "\n"

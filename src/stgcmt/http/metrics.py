"""Prometheus metrics at ``/metrics``, fed by the service's events.

Each server has its own :class:`~prometheus_client.CollectorRegistry` (never the global one), so
an SCP and an agent in one process, or many tests, never share or collide on a counter. Counting
happens on the emitting thread and only touches in-memory counters; the pending-reports gauge
is read from the journal at scrape time, and the archive's unsafe-copies gauge from the index.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    exposition,
    generate_latest,
)

from stgcmt.events import (
    AssociationAccepted,
    AssociationRejected,
    CommitmentRequested,
    Event,
    InstanceStored,
    ReportDelivered,
    ReportFailed,
    ReportGivenUp,
    SecurityAlert,
)

CONTENT_TYPE = exposition.CONTENT_TYPE_LATEST

STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""C-STORE handling: a small instance takes about a millisecond, a large one seconds."""
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0)
"""N-ACTION to delivered report: sub-second when the requester listens, hours when it does not."""


def hex_status(code: int) -> str:
    """The label a status gets: ``0x0000`` (as everywhere else in stgcmt)."""
    return f"0x{code:04X}"


class Metrics:
    """The counters, gauges and histograms of one service, and the observer that feeds them.
    ``pending`` returns the reports (SCP) or transactions (agent) waiting, ``unsafe`` (the
    archive's) the copies a failed sync may have lost, both read at scrape."""

    def __init__(
        self, pending: Callable[[], float], unsafe: Callable[[], float] | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.c_store = Counter(
            "stgcmt_c_store", "C-STOREs answered, by status", ["status"], registry=r
        )
        self.received_bytes = Counter(
            "stgcmt_received_bytes", "Data set bytes received by C-STORE", registry=r
        )
        self.n_action = Counter(
            "stgcmt_n_action",
            "N-ACTIONs (commitment requests) answered, by status",
            ["status"],
            registry=r,
        )
        self.reports_delivered = Counter(
            "stgcmt_reports_delivered",
            "Reports accepted by the requester, by association",
            ["via"],
            registry=r,
        )
        self.report_attempts_failed = Counter(
            "stgcmt_report_attempts_failed", "Report delivery attempts that failed", registry=r
        )
        self.reports_given_up = Counter(
            "stgcmt_reports_given_up", "Reports never delivered (given up)", registry=r
        )
        self.associations = Counter(
            "stgcmt_associations",
            "Associations requested from us, by outcome and rejection reason",
            ["outcome", "reason"],
            registry=r,
        )
        self.security_alerts = Counter(
            "stgcmt_security_alerts", "Security alerts, by kind", ["kind"], registry=r
        )
        self.c_store_seconds = Histogram(
            "stgcmt_c_store_seconds", "C-STORE handling time", buckets=STORE_BUCKETS, registry=r
        )
        self.report_latency = Histogram(
            "stgcmt_report_latency_seconds",
            "Seconds from N-ACTION to the delivered report",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        pending_gauge = Gauge(
            "stgcmt_pending_reports",
            "Reports (SCP) or commitments (agent) still awaited",
            registry=r,
        )
        pending_gauge.set_function(pending)
        if unsafe is not None:
            unsafe_gauge = Gauge(
                "stgcmt_instances_unsafe",
                "Copies a failed sync may have lost: never committed until sent again",
                registry=r,
            )
            unsafe_gauge.set_function(unsafe)

    def observe(self, event: Event) -> None:
        """The events observer: one counter step per fact."""
        match event:
            case InstanceStored():
                self.c_store.labels(hex_status(event.status)).inc()
                self.received_bytes.inc(event.size)
                self.c_store_seconds.observe(event.seconds)
            case CommitmentRequested():
                self.n_action.labels(hex_status(event.status)).inc()
            case ReportDelivered():
                self.reports_delivered.labels(event.via).inc()
                self.report_latency.observe(event.latency)
            case ReportFailed():
                self.report_attempts_failed.inc()
            case ReportGivenUp():
                self.reports_given_up.inc()
            case AssociationAccepted():
                self.associations.labels("accepted", "").inc()
            case AssociationRejected():
                self.associations.labels("rejected", event.reason).inc()
            case SecurityAlert():
                self.security_alerts.labels(event.kind).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

"""The collector's Prometheus metrics, one registry per collector instance.

Names and meanings (the README lists them too, and the alert rules use them):

- ``booktape_frames_total{symbol}``: websocket frames recorded.
- ``booktape_frame_bytes_total{symbol}``: bytes of those frames.
- ``booktape_bad_frames_total``: frames that were not valid depth events (kept as ``bad``).
- ``booktape_breaks_total{symbol}``: continuity breaks detected within a connection.
- ``booktape_last_update_id{symbol}``: the last ``u`` recorded.
- ``booktape_last_frame_timestamp_seconds{symbol}``: local time of the last frame
  (age = now - value).
- ``booktape_clock_offset_seconds``: local receive time minus exchange event time ``E``
  (latest frame), so regions can be compared.
- ``booktape_connections``: open websocket connections.
- ``booktape_reconnects_total``: connections replaced after a failure or staleness.
- ``booktape_connection_rotations_total``: planned make-before-break rotations.
- ``booktape_snapshots_total{symbol,outcome}``: REST snapshots (ok, stale, error).
- ``booktape_rest_responses_total{status}``: REST responses by HTTP status.
- ``booktape_rest_weight_used``: the last ``X-MBX-USED-WEIGHT-1M`` seen.
- ``booktape_rest_banned``: 1 while REST is stopped by a 418.
- ``booktape_chunks_sealed_total``: chunks sealed.
- ``booktape_spool_bytes`` / ``booktape_spool_chunks``: what waits on local disk.
- ``booktape_spool_full``: 1 while the spool is over its bound.
- ``booktape_uploads_total`` / ``booktape_upload_failures_total``: upload attempts' outcomes.
- ``booktape_upload_seconds``: upload latency histogram.
- ``booktape_slot_jitter_seconds``: Coinbase grid, request start minus slot time.
- ``booktape_missed_slots_total{symbol}``: Coinbase slots recorded as missed (product or
  price currency).
- Coinbase books also count in ``booktape_snapshots_total{symbol,outcome}``,
  ``booktape_rest_responses_total{status}`` and ``booktape_last_frame_timestamp_seconds``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """All metrics of one collector, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames = Counter("booktape_frames", "Frames recorded", ["symbol"], registry=r)
        self.frame_bytes = Counter(
            "booktape_frame_bytes", "Bytes of frames recorded", ["symbol"], registry=r
        )
        self.bad_frames = Counter("booktape_bad_frames", "Frames kept as bad records", registry=r)
        self.breaks = Counter(
            "booktape_breaks", "Continuity breaks within a connection", ["symbol"], registry=r
        )
        self.last_update_id = Gauge(
            "booktape_last_update_id", "Last final update id recorded", ["symbol"], registry=r
        )
        self.last_frame = Gauge(
            "booktape_last_frame_timestamp_seconds",
            "Local time of the last frame",
            ["symbol"],
            registry=r,
        )
        self.clock_offset = Gauge(
            "booktape_clock_offset_seconds",
            "Local receive time minus exchange event time",
            registry=r,
        )
        self.connections = Gauge("booktape_connections", "Open websocket connections", registry=r)
        self.reconnects = Counter("booktape_reconnects", "Connections replaced", registry=r)
        self.rotations = Counter(
            "booktape_connection_rotations", "Make-before-break rotations", registry=r
        )
        self.snapshots = Counter(
            "booktape_snapshots", "REST snapshots", ["symbol", "outcome"], registry=r
        )
        self.rest_responses = Counter(
            "booktape_rest_responses", "REST responses", ["status"], registry=r
        )
        self.rest_weight_used = Gauge(
            "booktape_rest_weight_used", "Last X-MBX-USED-WEIGHT-1M", registry=r
        )
        self.rest_banned = Gauge("booktape_rest_banned", "1 while banned by a 418", registry=r)
        self.chunks_sealed = Counter("booktape_chunks_sealed", "Chunks sealed", registry=r)
        self.spool_bytes = Gauge("booktape_spool_bytes", "Bytes waiting in the spool", registry=r)
        self.spool_chunks = Gauge(
            "booktape_spool_chunks", "Chunks waiting in the spool", registry=r
        )
        self.spool_full = Gauge("booktape_spool_full", "1 while the spool is full", registry=r)
        self.uploads = Counter("booktape_uploads", "Verified uploads", registry=r)
        self.upload_failures = Counter(
            "booktape_upload_failures", "Failed upload attempts", registry=r
        )
        self.upload_seconds = Histogram("booktape_upload_seconds", "Upload latency", registry=r)
        self.slot_jitter = Histogram(
            "booktape_slot_jitter_seconds",
            "Delay of a grid slot's start",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
            registry=r,
        )
        self.missed_slots = Counter(
            "booktape_missed_slots", "Grid slots missed", ["symbol"], registry=r
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

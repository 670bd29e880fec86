"""Prometheus metrics of one app, in the app's own registry (several apps can coexist in tests).

- ``churn_http_request_duration_seconds{method,route}``  latency histogram per route template
- ``churn_http_requests_total{method,route,status}``     responses by status code
- ``churn_predictions_total{risk_band,source}``          accounts scored, by band; source is
  ``model`` or ``rules`` (no model loaded)
- ``churn_model_info{model_version}``                    1 for the serving version
- ``churn_model_loaded``                                 1 when a model serves, else 0
- ``churn_model_reloads_total{outcome}``                 reloads: reloaded / unchanged / failed
- ``churn_rate_limited_total``                           requests refused with 429

Labels never carry account ids, names or feature values.
"""

from __future__ import annotations

from collections import Counter as _Tally

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Scoring one account takes about a millisecond; a thousand, tens of milliseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The collectors of one app."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram(
            "churn_http_request_duration_seconds",
            "Time to answer a request, by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "churn_http_requests",
            "HTTP responses by route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.predictions = Counter(
            "churn_predictions",
            "Accounts scored, by risk band and by what scored them.",
            ["risk_band", "source"],
            registry=r,
        )
        self.model_info = Gauge(
            "churn_model_info",
            "The serving model version (value 1).",
            ["model_version"],
            registry=r,
        )
        self.model_loaded = Gauge(
            "churn_model_loaded",
            "1 when a model is serving, 0 for rule-based scores only.",
            registry=r,
        )
        self.reloads = Counter(
            "churn_model_reloads", "Model reload attempts by outcome.", ["outcome"], registry=r
        )
        self.rate_limited = Counter(
            "churn_rate_limited", "Requests refused by the per-key rate limit.", registry=r
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route).observe(seconds)
        self.requests.labels(method, route, str(status)).inc()

    def count_predictions(self, bands: list[str | None], source: str) -> None:
        for band, n in _Tally(bands).items():
            self.predictions.labels(band or "unknown", source).inc(n)

    def set_model(self, version: str | None) -> None:
        self.model_info.clear()
        if version is not None:
            self.model_info.labels(version).set(1)
        self.model_loaded.set(1 if version is not None else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)

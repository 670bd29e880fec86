"""The API's routers, one per resource. Routers do not import each other; what they share
(the serving state, the caller's key, roles) comes from ``serving.deps``, and the score store
is opened by the app's lifespan (``serving.app``)."""

from __future__ import annotations

from fastapi import APIRouter


def api_routers() -> list[APIRouter]:
    """Health probes and metrics, predict, model, admin, accounts and lapsed, in that order."""
    from serving.routes import accounts, admin, health, lapsed, model, predict

    return [
        health.router,
        predict.router,
        model.router,
        admin.router,
        accounts.router,
        lapsed.router,
    ]

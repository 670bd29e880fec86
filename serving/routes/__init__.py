"""One router per resource. ``core_routers`` are this package's own; ``optional_routers``
picks up the modules of ``OPTIONAL_ROUTERS`` when they exist, so the accounts routes and the
dashboard plug in without editing ``serving/app.py``.

An optional module exposes ``router`` (an ``APIRouter``) and may define
``install(app: FastAPI) -> None`` for anything else it needs (static files, templates).
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter, FastAPI

OPTIONAL_ROUTERS: tuple[str, ...] = ("accounts", "dashboard")


def core_routers() -> list[APIRouter]:
    """Health probes and metrics, predict, model, admin."""
    from serving.routes import admin, health, model, predict

    return [health.router, predict.router, model.router, admin.router]


def optional_routers(app: FastAPI) -> list[APIRouter]:
    """The routers of the optional modules present in this installation."""
    routers = []
    for name in OPTIONAL_ROUTERS:
        qualified = f"{__name__}.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:  # the module exists but one of its imports is missing
                raise
            continue
        install = getattr(module, "install", None)
        if install is not None:
            install(app)
        router = getattr(module, "router", None)
        if router is not None:
            routers.append(router)
    return routers

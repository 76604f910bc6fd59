"""``create_app(settings)``: routers, error handlers, and a lifespan that loads the models."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.accounting.base import QueryCounter
from service.accounting.memory import MemoryCounter
from service.api.deps import Runtime
from service.api.errors import install_error_handlers
from service.api.routes import detections, docs, health, metrics, models, predict, usage, v2
from service.detection.detector import build_detectors
from service.metrics import install_metrics
from service.serving.pool import ModelPool
from service.settings import Settings

log = logging.getLogger(__name__)


def build_counter(settings: Settings) -> QueryCounter:
    if settings.redis_url or settings.redis_mode == "sentinel":
        from service.accounting.redis_counter import RedisCounter

        return RedisCounter(
            settings.redis_url,
            mode=settings.redis_mode,
            sentinels=settings.redis_sentinels,
            master_name=settings.redis_master_name,
            prefix=settings.redis_prefix,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
            token_ttl_s=settings.redis_token_ttl_s,
            master_check_s=settings.redis_sentinel_check_s,
            timeout=settings.redis_timeout_s,
        )
    log.info("no redis_url: counting in memory (single process only)")
    return MemoryCounter()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ModelPool.from_settings(settings)
        await pool.start()
        counter = build_counter(settings)
        if not await counter.ping():
            log.warning(
                "query counter unreachable at start-up: %s until it is",
                "answering uncounted" if settings.fail_open else "refusing with 503",
            )
        store, detectors = build_detectors(settings, counter)
        app.state.runtime = Runtime(settings, pool, counter, store, detectors)
        try:
            yield
        finally:
            app.state.runtime = None
            await counter.close()
            if store is not None:
                await store.close()
            await pool.aclose()

    app = FastAPI(
        title="SND gateway",
        version=__version__,
        summary="Image classifiers behind Small Noise Defense, with per-caller query accounting",
        lifespan=lifespan,
        docs_url=None,  # the offline pages of service.api.routes.docs instead of the CDN's
        redoc_url=None,
        openapi_url=docs.OPENAPI_URL,
    )
    app.state.runtime = None
    install_error_handlers(app)
    install_metrics(app)
    routers = (predict, v2, models, usage, detections, health, metrics, docs)
    for module in routers:
        app.include_router(module.router)
    return app

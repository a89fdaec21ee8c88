"""``python -m engine --models DIR [--host H] [--port P]``: serve the active bundle over HTTP.

Every option can also be set by its environment variable (shown beside it); a flag wins over its variable.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from pathlib import Path

# Before numpy loads: one BLAS thread. A text query's matrix-vector product (~0.1 ms) gains nothing from
# OpenBLAS threads, and on a busy machine their hand-offs and spinning made it 4-35x slower (0.4-3.8 ms
# measured on 2 shared cores) while taking CPU from the event loop. Set the variable to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from engine.serve import serve
from engine.settings import Settings
from space.cli import Parser, bind_error, cannot_listen, fail
from space.envvars import choice, flag, integer, number, text
from space.logs import setup_logging
from space.version import __version__


def build_parser(env: Mapping[str, str] | None = None) -> Parser:
    """The command line: every option with its help, default and ``ENGINE_*`` variable."""
    p = Parser("engine", __doc__, env=env)
    p.option("--models", type=Path, required=True, metavar="DIR",
             help="models directory holding ACTIVE and the bundles")
    p.option("--host", default="127.0.0.1", metavar="ADDRESS",
             help="address to listen on (0.0.0.0: every interface)")
    p.option("--port", kind=integer(0, 65535), default=8080, help="API port (0: any free one)")
    p.option("--processes", env="ENGINE_PROCESSES", kind=integer(1), default=1,
             help="engine processes sharing the port (SO_REUSEPORT): about one per core for text load")
    p.option("--workers", env="ENGINE_WORKERS", kind=integer(1), default=2, help="text worker threads")
    p.option("--queue-limit", env="ENGINE_QUEUE_LIMIT", kind=integer(1), default=64,
             help="text requests waiting or running beyond which the engine answers 503 busy")
    p.option("--image-workers", env="ENGINE_IMAGE_WORKERS", kind=integer(1), default=2,
             help="photo worker threads (their own pool)")
    p.option("--image-queue-limit", env="ENGINE_IMAGE_QUEUE_LIMIT", kind=integer(1), default=64,
             help="photo requests waiting or running beyond which the engine answers 503 busy")
    p.option("--encode-batch", env="ENGINE_ENCODE_BATCH", kind=integer(1), default=16,
             help="most photos per encoder call")
    p.option("--encode-wait-ms", env="ENGINE_ENCODE_WAIT_MS", kind=number(0), default=3.0,
             help="how long a photo waits for others to share its encoder call")
    p.option("--encoder", env="ENGINE_ENCODER", kind=choice("fp32", "int8"), default="fp32",
             help="int8: the bundle's int8 encoder when it has one (faster photos)")
    p.option("--cache-ttl", env="ENGINE_CACHE_TTL", kind=integer(0), default=3600,
             help="seconds an answer stays cached")
    p.option("--confident-cutoff", env="ENGINE_CONFIDENT_CUTOFF", kind=number(), default=0.5,
             help="best score below which /v1/images says confident: false")
    p.option("--max-upload-mb", env="ENGINE_MAX_UPLOAD_MB", kind=number(0.001), default=10.0,
             help="largest photo accepted, in MiB")
    p.option("--upload-timeout", env="ENGINE_UPLOAD_TIMEOUT_S", kind=number(0.1), default=30.0,
             help="seconds a photo's body may take to arrive (408 after)")
    p.option("--uploads-per-client", env="ENGINE_UPLOADS_PER_CLIENT", kind=integer(0), default=16,
             help="photo uploads one client address may have in flight (429 beyond; 0: no limit)")
    p.option("--poll", env="ENGINE_POLL_S", kind=number(0.01), default=2.0,
             help="seconds between two looks at ACTIVE")
    p.option("--metrics-port", env="ENGINE_METRICS_PORT", kind=integer(0, 65535), default=None,
             shown_default="the API port",
             help="serve /metrics and /v1/admin/* on this internal port only (the API port answers them 404)")
    p.variable("REDIS_URL", text(secret=True), None, "Redis for the shared answer cache and the bundle "
               "announcements", shown_default="unset, an in-process cache")
    p.variable("ENGINE_CACHE_REDIS_URL", text(secret=True), None, "the answer cache's own (evicting) Redis",
               shown_default="REDIS_URL")
    p.variable("ENGINE_ADMIN_TOKEN", text(secret=True), None, "bearer token of /v1/admin/*",
               shown_default="unset, the admin endpoints are off")
    p.variable("ENGINE_REDIS_RETRY_S", number(0.01), 3.0, "seconds between two Redis reconnections")
    p.variable("ENGINE_BUNDLE_CHANNEL", text(), "topicspace:bundle",
               "the Redis channel replicas announce bundle switches on")
    p.variable("ENGINE_GC_FREEZE", flag(), True, "0: keep a loaded bundle in the garbage collector's passes")
    return p


def settings_from(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the command line and the environment (exit 2 with one line on a bad one)."""
    return _settings(build_parser(env).parse(argv))


def _settings(a: argparse.Namespace) -> Settings:
    return Settings(
        models_dir=a.models,
        host=a.host,
        port=a.port,
        redis_url=a.redis_url,
        cache_redis_url=a.engine_cache_redis_url,
        admin_token=a.engine_admin_token,
        workers=a.workers,
        queue_limit=a.queue_limit,
        image_workers=a.image_workers,
        image_queue_limit=a.image_queue_limit,
        encode_batch=a.encode_batch,
        encoder=a.encoder,
        encode_wait_s=a.encode_wait_ms / 1000.0,
        cache_ttl_s=a.cache_ttl,
        confident_cutoff=a.confident_cutoff,
        max_upload_bytes=int(a.max_upload_mb * 1024 * 1024),
        upload_timeout_s=a.upload_timeout,
        uploads_per_client=a.uploads_per_client,
        poll_s=a.poll,
        redis_retry_s=a.engine_redis_retry_s,
        bundle_channel=a.engine_bundle_channel,
        handle_sighup=True,
        processes=a.processes,
        gc_freeze=a.engine_gc_freeze,
        metrics_port=a.metrics_port,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m engine`` and ``topicspace-engine``."""
    parser = build_parser()
    args = parser.parse(argv)
    settings = _settings(args)
    setup_logging(parser.log_settings(args), settings.secrets())
    logging.getLogger(__name__).info("topicspace %s: engine on %s:%d over %s", __version__, settings.host,
                                     settings.port, settings.models_dir)
    try:
        status = serve(settings, settings.processes)
    except OSError as exc:
        if not bind_error(exc):
            raise
        if "/metrics" in str(exc):
            fail(parser.prog, cannot_listen("serve /metrics", settings.host, settings.metrics_port, exc,
                                            "choose another --metrics-port or ENGINE_METRICS_PORT"), status=1)
        fail(parser.prog, cannot_listen("listen", settings.host, settings.port, exc,
                                        "choose another --port"), status=1)
    raise SystemExit(status)


if __name__ == "__main__":
    main()

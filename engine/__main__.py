"""``python -m engine --models DIR [--host H] [--port P]``: run the engine service."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

# Before numpy loads: one BLAS thread. A text query's matrix-vector product (~0.1 ms) gains nothing from
# OpenBLAS threads, and on a busy machine their hand-offs and spinning made it 4-35x slower (0.4-3.8 ms
# measured on 2 shared cores) while taking CPU from the event loop. Set the variable to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from engine.serve import serve
from engine.settings import Settings
from space.logs import configure_logging


def settings_from(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build the settings from the command line and the environment."""
    env = dict(os.environ) if env is None else env
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    p.add_argument("--models", type=Path, required=True, help="models directory holding ACTIVE and bundles")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--processes", type=int, default=int(env.get("ENGINE_PROCESSES", "1")),
                   help="engine processes sharing the port (SO_REUSEPORT): about one per core for text load")
    p.add_argument("--workers", type=int, default=int(env.get("ENGINE_WORKERS", "2")))
    p.add_argument("--queue-limit", type=int, default=int(env.get("ENGINE_QUEUE_LIMIT", "64")))
    p.add_argument("--image-workers", type=int, default=int(env.get("ENGINE_IMAGE_WORKERS", "2")))
    p.add_argument("--image-queue-limit", type=int, default=int(env.get("ENGINE_IMAGE_QUEUE_LIMIT", "64")))
    p.add_argument("--encode-batch", type=int, default=int(env.get("ENGINE_ENCODE_BATCH", "16")),
                   help="most photos per encoder call")
    p.add_argument("--encode-wait-ms", type=float, default=float(env.get("ENGINE_ENCODE_WAIT_MS", "3")),
                   help="how long a photo waits for others to share its encoder call")
    p.add_argument("--encoder", choices=("fp32", "int8"), default=env.get("ENGINE_ENCODER", "fp32"),
                   help="int8: the bundle's int8 encoder when it has one (faster photos)")
    p.add_argument("--cache-ttl", type=int, default=int(env.get("ENGINE_CACHE_TTL", "3600")))
    p.add_argument("--confident-cutoff", type=float, default=float(env.get("ENGINE_CONFIDENT_CUTOFF", "0.5")))
    p.add_argument("--max-upload-mb", type=float, default=float(env.get("ENGINE_MAX_UPLOAD_MB", "10")))
    p.add_argument("--upload-timeout", type=float, default=float(env.get("ENGINE_UPLOAD_TIMEOUT_S", "30")),
                   help="seconds a photo's body may take to arrive (408 after)")
    p.add_argument("--uploads-per-client", type=int, default=int(env.get("ENGINE_UPLOADS_PER_CLIENT", "16")),
                   help="photo uploads one client address may have in flight (429 beyond; 0: no limit)")
    p.add_argument("--poll", type=float, default=float(env.get("ENGINE_POLL_S", "2")), help="ACTIVE poll (s)")
    metrics_port = env.get("ENGINE_METRICS_PORT", "").strip()
    p.add_argument("--metrics-port", type=int, default=int(metrics_port) if metrics_port else None,
                   help="serve /metrics on this port only (env ENGINE_METRICS_PORT; default: the API port)")
    a = p.parse_args(argv)
    return Settings(
        models_dir=a.models,
        host=a.host,
        port=a.port,
        redis_url=env.get("REDIS_URL") or None,
        cache_redis_url=env.get("ENGINE_CACHE_REDIS_URL") or None,
        admin_token=env.get("ENGINE_ADMIN_TOKEN") or None,
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
        redis_retry_s=float(env.get("ENGINE_REDIS_RETRY_S", "3")),
        bundle_channel=env.get("ENGINE_BUNDLE_CHANNEL") or "topicspace:bundle",
        handle_sighup=True,
        processes=max(1, a.processes),
        gc_freeze=env.get("ENGINE_GC_FREEZE", "1") != "0",
        metrics_port=a.metrics_port,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m engine`` and ``topicspace-engine``."""
    settings = settings_from(argv)
    configure_logging(settings.secrets(), os.environ.get("LOG_LEVEL", "INFO").upper())
    logging.getLogger(__name__).info(
        "engine on %s:%d over %s", settings.host, settings.port, settings.models_dir
    )
    raise SystemExit(serve(settings, settings.processes))


if __name__ == "__main__":
    main()

"""Engine configuration: one frozen dataclass, built once in ``main()`` and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from space.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from space.logs import url_secrets


@dataclass(frozen=True)
class Settings:
    """Everything the engine can be configured with."""

    models_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    # The answer cache's own Redis (one that may evict: maxmemory + allkeys-lru); None: the cache uses
    # redis_url. Kept apart so a flood of distinct queries can never evict the bot's state, the retrain
    # lock or the job queue, which live in redis_url's Redis.
    cache_redis_url: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)  # never logged
    cache_ttl_s: int = 3600
    lru_entries: int = 4096
    # In-process tier in front of Redis (0 = every lookup goes to Redis).
    local_entries: int = 2048
    local_ttl_s: int = 60
    workers: int = 2
    # Requests allowed to wait for or hold a worker; beyond this we answer 503 busy at once.
    queue_limit: int = 64
    # Image work (decode + CNN): its own pool, so photos never queue text queries behind them.
    image_workers: int = 2
    image_queue_limit: int = 64
    ort_threads: int = 1
    # "int8": serve the bundle's static int8 encoder (image_encoder.int8.onnx, ~1.4x faster on a CPU, mean
    # cosine >= 0.99 to fp32, checked by the trainer) when it has one; "fp32": always the exported one.
    encoder: str = "fp32"
    # Photo micro-batching: concurrent encodings share one encoder call of at most this many images,
    # formed within this wait (0 = take what is queued at once).
    encode_batch: int = 16
    encode_wait_s: float = 0.003
    max_upload_bytes: int = DEFAULT_MAX_BYTES
    # A photo's body must have arrived within this many seconds (a stalled client holds a photo slot and
    # up to max_upload_bytes of memory until then); 408 after.
    upload_timeout_s: float = 30.0
    # Photo uploads one client (peer address) may have in flight; 429 beyond. 0: no per-client limit.
    uploads_per_client: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    default_k: int = 10
    max_k: int = 100
    max_offset: int = 1000
    confident_cutoff: float = 0.5
    thumb_max: int = 1024
    poll_s: float = 2.0
    redis_timeout_s: float = 0.25
    redis_retry_s: float = 3.0
    handle_sighup: bool = False
    # Engine processes on one port (engine.serve); each has its own pools, model and in-process cache tier.
    processes: int = 1
    # gc.freeze() after each bundle load: its long-lived objects leave the collector's full passes.
    gc_freeze: bool = True
    # Redis pub/sub channel on which replicas announce the bundle they switched to.
    bundle_channel: str = "topicspace:bundle"
    # /metrics on this port only (engine.probes), so that the API port can be public; None: on the API port.
    metrics_port: int | None = None

    def secrets(self) -> list[str]:
        """What must never reach a log line: the admin token and the Redis URL's password."""
        return ([self.admin_token] if self.admin_token else []) + url_secrets(self.redis_url) \
            + url_secrets(self.cache_redis_url)

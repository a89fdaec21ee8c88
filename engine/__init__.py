"""The engine: an aiohttp service answering word and image queries over the active model bundle.

Layout: ``settings`` (frozen config, built in ``__main__``), ``serve`` (one process, or several on one
port under a supervisor), ``app`` (factory, ``cleanup_ctx`` resources,
error/metrics middleware), ``views`` (thin routes), ``service`` (answers as plain functions of a model),
``model`` (a loaded bundle + the holder that swaps it), ``runtime`` (bounded pools, reloads, ACTIVE poll),
``cache`` (Redis with a breaker, in-process LRU, both tiers), ``batcher`` (concurrent photo encodings
share one ONNX Runtime call), ``querybatch`` (text queries of one loop iteration share one matrix
product), ``bus`` (replicas: bundle switches announced over Redis pub/sub),
``singleflight``, ``metrics``, ``openapi``; ``webpage`` (the web page at ``/``, its files in ``static/``,
calling the same API).

Decisions clients can rely on:
- A query whose words are all unknown answers 200 with empty results and ``unknown`` listed (the same
  shape as a partly known query); only an empty or stop-word-only query is a 400 ``empty_query``.
- ``/healthz`` is always 200; its ``status`` is ``degraded`` while no valid bundle is loaded, and queries
  then answer 503 ``no_bundle``. Why a bundle was refused is for admins (``/v1/admin/versions``
  ``last_error``) and the log, not ``/healthz``.
- A status of 5xx is the server's state (busy, no bundle, a bundle refused); a request naming something
  that does not exist is a 4xx (``unknown_version`` 404 for an admin reload or activate of an unpublished
  version), so clients may read every 5xx as "retry later".
- Uploads: at most ``ENGINE_MAX_UPLOAD_MB`` for the image and 64 KiB more for a multipart body's framing and
  other fields, counted after ``Content-Encoding`` is undone; beyond it a 413, without reading the rest.
- A full worker queue answers 503 ``busy`` at once; text and image work have separate pools.
- ``POST /v1/admin/reload?version=V`` pins V until ``ACTIVE`` next changes (the poll reacts to changes
  of ``ACTIVE``, not to a difference from the served version).
- Answers are cached under (bundle version, endpoint, normalised query or image sha256, k, offset, lang).
- Replicas sharing one Redis: an admin reload/activate on one is announced on ``topicspace:bundle`` and
  every subscribed replica loads that version (verified like any reload). A replica that re-subscribes
  after losing Redis serves ACTIVE if it serves something else; a ``reload?version=V`` announced while it
  was away is not replayed (ACTIVE is the durable truth).
- Under ``--processes N`` each process is such a replica on the same port: ``/healthz`` names the ``pid``
  that answered, ``/metrics`` from any of them covers all of them, and a switch reaches every process
  (over Redis, or by the ACTIVE poll without it; a ``reload?version=V`` without Redis reaches only the
  process that answered it).
- Answers over up to 20,000 images or words are exact (one matrix product); larger bundles are searched
  through their usearch index (recall@10 0.985 against exact for two-word text queries on the default
  Flickr8k bundle, ``scripts/bench_knn.py --text-queries``).
- A query ranks the same whatever page is asked: pages of it (``offset``, ``k``), concatenated, are one
  deeper answer, and equal scores rank in corpus order. Through an index the ranking is read in tiers of
  ever wider searches (the first as wide as the index's search breadth, 64 up to 1M vectors), so past a
  tier's end a hit may score slightly above the last ones of the tier before it.
"""

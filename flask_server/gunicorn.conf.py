"""gunicorn settings for the gateway in production, tuned for the 2-core reference machine.

Used by ``make run`` (scripts/auto_cmd.py), the benchmark and the load test::

    gunicorn --config flask_server/gunicorn.conf.py "flask_server.app:create_app()"

Every value can be overridden from the environment (below) or on the command line (``--workers 4``
wins over this file). Measured effects of workers and threads are in bench/README.md.

| variable | default | meaning |
|---|---|---|
| GATEWAY_BIND | 127.0.0.1:5000 | address:port to listen on (0.0.0.0:5000 to expose it) |
| GATEWAY_WORKERS | 2 | worker processes |
| GATEWAY_THREADS | 4 | threads per worker |
| GATEWAY_TIMEOUT | 30 | seconds a silent worker may live before the arbiter restarts it |
| GATEWAY_GRACEFUL_TIMEOUT | 15 | seconds in-flight requests get to finish on SIGTERM / reload |
| GATEWAY_KEEPALIVE | 5 | seconds an idle client connection is kept open |
| GATEWAY_MAX_REQUESTS | 2000 | recycle a worker after this many requests (0 = never) |
| GATEWAY_MALLOC_ARENA_MAX | 1 | glibc malloc arenas per worker (0 = glibc's default, 8 per core) |
| PROMETHEUS_MULTIPROC_DIR | (unset) | when set, dead workers' metric files are marked dead |
"""

from __future__ import annotations

import ctypes
import os

# Workers: one per core. The gateway's own CPU work per request is ~13 ms for a 2 MP JPEG (Pillow
# decode ~8 ms, then base64, JSON and HTTP); Pillow releases the GIL, but Python around it does not,
# so CPU-bound parallelism needs processes. More workers than cores only adds ~55 MB RSS each
# (measured in bench/README.md) because the model server, not the gateway, is the bottleneck.
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))

# Threads: a request spends ~85 % of its time waiting for the model server (InceptionV3 60-90 ms vs
# ~13 ms of its own work), so each worker overlaps several waits with threads (gthread) instead of
# processes: 2 x 4 = 8 requests in flight, enough to keep the model server's queue non-empty. Only
# one of a worker's threads decodes at a time (GATEWAY_DECODE_CONCURRENCY), which bounds memory.
worker_class = "gthread"
threads = int(os.environ.get("GATEWAY_THREADS", "4"))

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:5000")

# Longer than the gateway's backend timeout (GATEWAY_BACKEND_TIMEOUT, 10 s) so a slow model server
# produces the gateway's clean 504, never a worker killed mid-request by the arbiter.
timeout = int(os.environ.get("GATEWAY_TIMEOUT", "30"))
# On SIGTERM, requests already waiting on the model server (<= 10 s) are allowed to finish.
graceful_timeout = int(os.environ.get("GATEWAY_GRACEFUL_TIMEOUT", "15"))

# Clients (and load balancers) reuse connections: a new TCP connection per image costs more than the
# request line. Behind a load balancer set this above the balancer's idle timeout (e.g. 75 for an
# ALB's 60 s) so the gateway never closes a connection the balancer is about to reuse.
keepalive = int(os.environ.get("GATEWAY_KEEPALIVE", "5"))

# Recycle workers now and then: Pillow and numpy buffers fragment the heap over millions of
# requests. Jitter keeps the workers from restarting at the same moment.
max_requests = int(os.environ.get("GATEWAY_MAX_REQUESTS", "2000"))
max_requests_jitter = max(1, max_requests // 10)

# Each worker builds its own app: nothing heavy happens at import (no TensorFlow in the gateway), and
# a fork after creating a requests.Session or a Redis client would share their sockets.
preload_app = False

# The app writes one structured line per request (request id, model, status, timings); gunicorn's
# access log would only duplicate it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GATEWAY_LOG_LEVEL", "info").lower()

# Heartbeat files on tmpfs: on a busy or containerised disk, a slow fsync can make the arbiter kill
# healthy workers. /dev/shm exists on Linux; elsewhere gunicorn's default temp dir is used.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Request-line/header limits stay at gunicorn's defaults; the body limit is the app's
# (GATEWAY_MAX_BODY_BYTES, 413), because gunicorn has none for bodies.


# Heap: one glibc malloc arena per worker instead of one per thread. Each request allocates
# megabyte-sized buffers (the decoded image, the base64 body); with an arena per thread, each of
# the 4 threads' arenas kept its own high-water mark and a worker sat at 105-127 MB after a load run.
# With one arena, freed buffers are reused by whichever thread comes next: 71-73 MB after, 86-88 MB
# peak, and no throughput lost (the GIL serialises most allocations anyway). An earlier fix capped
# M_MMAP_THRESHOLD at 256 KB instead: same memory, but every big buffer then became a fresh mmap whose
# page faults cost ~10 ms of CPU per request, 12.7 -> 23 ms (bench/README.md). Set in post_fork, before
# the worker starts its threads, because MALLOC_ARENA_MAX in the environment would need every launcher
# (make run, Docker, k8s) to set it. GATEWAY_DECODE_CONCURRENCY (config.py) bounds the image buffers.
malloc_arena_max = int(os.environ.get("GATEWAY_MALLOC_ARENA_MAX", "1"))
_M_ARENA_MAX = -8  # from glibc's malloc.h


def on_starting(server) -> None:
    """Before gunicorn binds: a busy address is one line and exit code 1.

    Without this gunicorn retries for five seconds, one "Connection in use" line each, and then
    exits with "Can't connect to ..." without saying how to pick another address.
    """
    import sys

    from serving_contract.ports import bind_error

    for address in server.cfg.address:
        if not isinstance(address, tuple):  # a unix socket path: gunicorn's own check is clear enough
            continue
        host, port = address[0], address[1]
        exc = bind_error(host, port)
        if exc is not None:
            shown = f"[{host}]" if ":" in host else host
            print(f"Failed to start gateway. Error: cannot listen on {shown}:{port}: {exc.strerror or exc} "
                  "(choose another address with --bind or GATEWAY_BIND)", file=sys.stderr, flush=True)
            sys.exit(1)


def post_fork(server, worker) -> None:
    """In each new worker: limit glibc's malloc arenas (see above); a no-op where libc is not glibc."""
    if malloc_arena_max <= 0:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, malloc_arena_max)
    except (OSError, AttributeError):  # musl, macOS: nothing to tune
        server.log.debug("mallopt unavailable; heap tuning skipped")


def child_exit(server, worker) -> None:
    """Tell prometheus_client a worker is gone, so its live gauges stop counting (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

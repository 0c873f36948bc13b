"""``python -m model_server``: tensorflow_model_server's command line, serving the REST API.

Exit codes follow the real binary: 0 after a graceful stop (SIGTERM/SIGINT), 255 ("return -1")
when the server cannot start, and 1 for a flag error (absl's behaviour). A port that cannot be
bound (in use) is also 1: it is found before any model is loaded, and is the caller's to fix by
picking another port, like a flag.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from model_server.config import BindError, ConfigError, FlagError, flags_usage, parse_flags

EXIT_OK = 0
EXIT_FLAG_ERROR = 1
EXIT_BIND_FAILED = 1
EXIT_START_FAILED = 255
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s"
VERSION = "model_server 0.1.0 (TF Serving REST API compatible)"


def main(argv: list[str]) -> int:
    """Run the server until SIGTERM/SIGINT; returns the process exit code."""
    if "--help" in argv or "--helpfull" in argv or "--helpshort" in argv:
        print(flags_usage())
        return EXIT_OK
    try:
        config = parse_flags(argv)
    except FlagError as exc:
        print(f"FATAL Flags parsing error: {exc}\nPass --helpshort or --helpfull to see help on flags.",
              file=sys.stderr)
        return EXIT_FLAG_ERROR
    if config.version:
        print(VERSION)
        return EXIT_OK

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF's C++ INFO lines drown ours

    from model_server.server import ModelServer  # after flags, so --help stays instant

    try:
        server = ModelServer(config)
    except ConfigError as exc:
        print(f"Failed to start server. Error: {exc}", flush=True)
        return EXIT_START_FAILED

    def on_signal(signum: int, _frame) -> None:
        logging.getLogger("model_server").info("Received %s; shutting down gracefully",
                                               signal.Signals(signum).name)
        server.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except ConfigError as exc:
        print(f"Failed to start server. Error: {exc}", flush=True)
        server.shutdown()
        return EXIT_BIND_FAILED if isinstance(exc, BindError) else EXIT_START_FAILED
    server.wait_for_stop()
    server.shutdown()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

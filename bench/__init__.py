"""Benchmark and load test of the serving path: bare model, model server, gateway, tutorial path.

``python -m bench`` (``make bench``) prints one table measured side by side in one run;
``python -m bench.loadtest`` (``make loadtest``) is a bounded 2,000-request load test through
gunicorn. Both start their own servers on 127.0.0.1 and free ports; see bench/README.md.
"""

"""Placeholder: filled in shortly."""

from __future__ import annotations


def init_app(app, config) -> None:
    """Nothing yet."""

"""Placeholder: replaced by the owning package's CLI."""
from __future__ import annotations


def register(sub, parent) -> None:
    pass


def register_evaluate(sub, parent) -> None:
    pass

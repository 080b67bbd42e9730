"""Exceptions that the CLI turns into one-line messages with exit code 2."""
from __future__ import annotations


class DiffSegError(Exception):
    """Base of every error the user can fix (bad input, missing model, full disk)."""


class InputError(DiffSegError, ValueError):
    """An input file or argument cannot be used; the message names it and the problem."""


class ModelNotFoundError(DiffSegError, FileNotFoundError):
    """The requested model weights are not available; the message says how to get them."""


class OutputError(DiffSegError, OSError):
    """An output could not be written (disk full, read-only, permissions)."""


def short_message(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace collapsed), at most ``limit`` characters:
    library errors quoted inside our one-line errors."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(value: str, options: "list[str] | tuple[str, ...]") -> str:
    """' (did you mean X?)' for the closest option, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(value, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def look_up_option(value: str, options: "list[str] | tuple[str, ...]", name: str) -> str:
    """Return ``value`` if it is one of ``options``, else raise a ValueError naming them."""
    if value in options:
        return value
    raise InputError(
        f"unknown {name} {value!r}{did_you_mean(value, options)}; expected one of {', '.join(map(str, options))}"
    )

"""Progress bars (tqdm on stderr) that the CLI's --quiet turns off everywhere."""
from __future__ import annotations

from typing import Any, Iterable

_ENABLED = True


def set_progress_enabled(enabled: bool) -> None:
    """Globally enable or disable progress bars (``diffseg --quiet`` disables them)."""
    global _ENABLED
    _ENABLED = bool(enabled)


def progress_enabled() -> bool:
    return _ENABLED


def progress(iterable: "Iterable[Any] | None" = None, *, total: "int | None" = None,
             desc: str = "", unit: str = "it", enabled: "bool | None" = None, **kw: Any):
    """A tqdm bar with ETA on stderr, or a silent pass-through when disabled. A finished bar
    stays on screen at 100 % (``leave=False`` erases it)."""
    from tqdm.auto import tqdm

    on = _ENABLED if enabled is None else enabled
    kw.setdefault("leave", True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not on, dynamic_ncols=True, **kw)

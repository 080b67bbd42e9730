"""Paired comparison of two linkers on the same benchmark cells (item x family).

One decision about a big object (whose track keeps the rider after a merge frame) moves a
cell's ratio by up to +-0.6, so the mean of a few dozen cells moves by a few hundredths
from a handful of flips. A change is therefore reported against its reference on the same
cells as: the mean difference with a bootstrap 95 % interval (cells resampled with
replacement), and how many cells it wins, loses and ties (|difference| <= ``tie``). An
interval that contains 0 is not evidence either way.

    python3 benchmarks/paired.py rows.json [--base engine] [--metric ratio]

``rows.json``: the ``--json`` output of `linking_bench.py` or `volume_linking_bench.py`
(a list of rows with ``item``, ``family``, ``method`` and the metric). Several files (seeds)
are pooled, each cell counted once per file: the scikit-image families of the real items do
not depend on the seed, so their cells repeat and the pooled interval is too narrow for them.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np


@dataclass
class Paired:
    """``other - base`` over the cells both have."""

    n: int
    mean: float
    low: float
    high: float
    wins: int
    losses: int
    ties: int

    def line(self, name: str, base: str) -> str:
        verdict = ("better" if self.low > 0 else "worse" if self.high < 0 else "no evidence either way")
        return (f"{name:24s} vs {base}: mean {self.mean:+.3f} [95 % {self.low:+.3f}, {self.high:+.3f}] over "
                f"{self.n} cells; wins {self.wins}, losses {self.losses}, ties {self.ties}: {verdict}")


def paired(base: dict, other: dict, tie: float = 0.01, n_boot: int = 10000, seed: int = 0) -> Paired:
    """Compare ``other`` with ``base`` (``{cell: value}``) on their common cells."""
    keys = sorted(set(base) & set(other))
    if not keys:
        raise ValueError("the two methods share no cell")
    d = np.array([other[k] - base[k] for k in keys], np.float64)
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return Paired(len(d), float(d.mean()), float(low), float(high), int((d > tie).sum()), int((d < -tie).sum()),
                  int((np.abs(d) <= tie).sum()))


def by_method(rows: Iterable[dict], metric: str = "ratio") -> dict[str, dict]:
    """``{method: {(item, family): value}}`` from benchmark rows."""
    out: dict[str, dict] = {}
    for r in rows:
        out.setdefault(r["method"], {})[(r["item"], r["family"])] = float(r[metric])
    return out


def report(rows: Iterable[dict], base: str, metric: str = "ratio") -> list[str]:
    """One line per method other than ``base``."""
    m = by_method(rows, metric)
    if base not in m:
        return []
    return [paired(m[base], vals).line(name, base) for name, vals in m.items() if name != base]


def print_report(rows: Iterable[dict], methods: Iterable[str], base: str = "engine") -> None:
    """The benchmarks' closing section: every method against ``base`` when both ran."""
    methods = list(methods)
    if base in methods and len(methods) > 1:
        print(f"\n# paired against the {base} on the same cells (bootstrap 95 % interval; see paired.py)")
        for line in report(rows, base):
            print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", type=Path, nargs="+", help="--json outputs (several: rows of all, e.g. two seeds)")
    ap.add_argument("--base", default="engine")
    ap.add_argument("--metric", default="ratio")
    a = ap.parse_args()
    rows = []
    for i, p in enumerate(a.rows):  # the same cell of two files (seeds) counts twice
        rows += [dict(r, item=f"{r['item']}#{i}") for r in json.loads(p.read_text())]
    for line in report(rows, a.base, a.metric):
        print(line)


if __name__ == "__main__":
    main()

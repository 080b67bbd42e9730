"""Paired comparison of two linkers on the same benchmark cells (item x family).

One decision about a big object (whose track keeps the rider after a merge frame) moves a
cell's ratio by up to +-0.6, so the mean of a few dozen cells moves by a few hundredths
from a handful of flips. A change is therefore reported against its reference on the same
cells as: the mean difference with a bootstrap 95 % interval (cells resampled with
replacement), and how many cells it wins, loses and ties (|difference| <= ``tie``). An
interval that contains 0 is not evidence either way.

    python3 benchmarks/paired.py rows.json [--base engine] [--metric ratio]
    python3 benchmarks/paired.py before.json [...] --other after.json [...] [--base engine]

``rows.json``: the ``--json`` output of `linking_bench.py` or `volume_linking_bench.py`
(a list of rows with ``item``, ``family``, ``method`` and the metric). Several files (seeds)
are pooled, each cell counted once per file: the scikit-image families of the real items do
not depend on the seed, so their cells repeat and the pooled interval is too narrow for them.

``--other``: the same benchmark run on another checkout (a change against its starting
commit), one file per positional file, in the same order: ``--base`` of the other runs
against ``--base`` of these, and how many cells give exactly the same labels (the rows'
``out`` fingerprints), so a change meant to keep the output can show that it does.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np


# metrics of the benchmark rows where less is better (id switches per object per 100 frames)
LOWER_IS_BETTER = {"sw"}


def fingerprint(labels: "Iterable[np.ndarray]") -> str:
    """A short hash of a linker's output label maps: the ``out`` of a benchmark row, which
    `against` compares (did a change keep the output exactly?)."""
    h = hashlib.md5()
    for lab in labels:
        h.update(np.ascontiguousarray(lab, np.int32).tobytes())
    return h.hexdigest()[:16]


@dataclass
class Paired:
    """``other - base`` over the cells both have (``wins`` / ``losses``: cells where other is
    higher / lower by more than the tie; `line` swaps them for a metric where less is
    better)."""

    n: int
    mean: float
    low: float
    high: float
    wins: int
    losses: int
    ties: int

    def line(self, name: str, base: str, lower_is_better: bool = False) -> str:
        up, down = ("worse", "better") if lower_is_better else ("better", "worse")
        verdict = (up if self.low > 0 else down if self.high < 0 else "no evidence either way")
        wins, losses = (self.losses, self.wins) if lower_is_better else (self.wins, self.losses)
        return (f"{name:24s} vs {base}: mean {self.mean:+.3f} [95 % {self.low:+.3f}, {self.high:+.3f}] over "
                f"{self.n} cells; wins {wins}, losses {losses}, ties {self.ties}: {verdict}")


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
    return [paired(m[base], vals).line(name, base, metric in LOWER_IS_BETTER) for name, vals in m.items() if name != base]


def against(these: "list[dict]", other: "list[dict]", base: str = "engine", metric: str = "ratio") -> list[str]:
    """Method ``base`` of another run (``other``: another checkout, the same cells) against
    ``base`` of ``these``: the paired line, and how many cells give exactly the same labels
    (the rows' ``out`` fingerprints; a row without one is never identical)."""
    a = [dict(r, method=f"{base} (these)") for r in these if r["method"] == base]
    b = [dict(r, method=f"{base} (other)") for r in other if r["method"] == base]
    line = report(a + b, f"{base} (these)", metric)[0]
    fp = {(r["item"], r["family"]): r.get("out") for r in a}
    same = sum(r.get("out") is not None and fp.get((r["item"], r["family"])) == r["out"] for r in b)
    return [line, f"identical output on {same} of {len(b)} cells"]


def print_report(rows: Iterable[dict], methods: Iterable[str], base: str = "engine") -> None:
    """The benchmarks' closing section: every method against ``base`` when both ran."""
    methods = list(methods)
    if base in methods and len(methods) > 1:
        print(f"\n# paired against the {base} on the same cells (bootstrap 95 % interval; see paired.py)")
        for line in report(rows, base):
            print(line)


def print_ceilings(rows: "list[dict]", methods: Iterable[str], held_out: Iterable[str], target: float,
                   unit: str) -> None:
    """The benchmarks' section on the ceiling of linking (`families.ceiling`, in the rows'
    ``ceiling``; each row's ``of_ceiling`` is its score over it): per method the mean share
    of the ceiling, tuning families (worst) | held out, and the cells where ``target`` x the
    per-frame (per-slice) oracle lies above the ceiling: a linker that only joins segments
    reaches it there only by joining better than the ceiling's rule, which is the best for
    each object alone."""
    held_out = set(held_out)
    print(f"\n# share of the ceiling ({unit} of every object given the segments that make its best score), "
          f"tuning families (worst) | held out")
    for m in methods:
        tune = [r["of_ceiling"] for r in rows if r["method"] == m and r["family"] not in held_out]
        held = [r["of_ceiling"] for r in rows if r["method"] == m and r["family"] in held_out]
        if tune or held:
            print(f"{m:28s} {np.mean(tune) if tune else float('nan'):.3f} "
                  f"({min(tune) if tune else float('nan'):.3f}) | {np.mean(held) if held else float('nan'):.3f}")
    cells = {(r["item"], r["family"]): r for r in rows}.values()
    above = [f"{r['item']}/{r['family']} ({r['ceiling'] / r['oracle']:.2f})" for r in cells
             if r["ceiling"] < target * r["oracle"]]
    print(f"# cells whose ceiling is below {target} x the oracle (ceiling / oracle): {len(above)} of {len(cells)}"
          + (": " + ", ".join(above) if above else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", type=Path, nargs="+", help="--json outputs (several: rows of all, e.g. two seeds)")
    ap.add_argument("--base", default="engine")
    ap.add_argument("--metric", default="ratio")
    ap.add_argument("--other", type=Path, nargs="+", default=None,
                    help="the same runs on another checkout, one per rows file, in order")
    a = ap.parse_args()
    if a.other is not None and len(a.other) != len(a.rows):
        ap.error(f"--other takes one file per rows file ({len(a.rows)}); got {len(a.other)}")

    def load(paths: "list[Path]") -> list[dict]:
        out = []
        for i, p in enumerate(paths):  # the same cell of two files (seeds) counts twice
            out += [dict(r, item=f"{r['item']}#{i}") for r in json.loads(p.read_text())]
        return out
    lines = report(load(a.rows), a.base, a.metric) if a.other is None else against(
        load(a.rows), load(a.other), a.base, a.metric)
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()

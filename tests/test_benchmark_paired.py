"""benchmarks/paired.py: the paired comparison the linking benchmarks print."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from paired import against, fingerprint, paired, report  # noqa: E402


def cells(values):
    return {(f"item{i}", "fam"): v for i, v in enumerate(values)}


def test_a_uniform_gain_is_evidence():
    base = cells([0.5 + 0.01 * i for i in range(20)])
    other = {k: v + 0.1 for k, v in base.items()}
    p = paired(base, other)
    assert p.mean == pytest.approx(0.1)
    assert p.low == pytest.approx(0.1) and p.high == pytest.approx(0.1)
    assert (p.wins, p.losses, p.ties) == (20, 0, 0)
    assert "better" in p.line("x", "engine")


def test_one_flipped_cell_is_not_evidence():
    # one decision about a big object moves one cell by +0.6: the mean rises by 0.03, but a
    # resample without that cell is as likely as not, so the interval reaches 0
    base = cells([0.8] * 20)
    other = dict(base)
    other[("item3", "fam")] = 1.4
    p = paired(base, other)
    assert p.mean == pytest.approx(0.03)
    assert p.low <= 0.0 < p.high
    assert (p.wins, p.losses, p.ties) == (1, 0, 19)
    assert "no evidence" in p.line("x", "engine")


def test_a_consistent_loss_is_worse_and_only_common_cells_count():
    base = cells([0.9] * 10)
    other = {k: v - 0.05 for k, v in base.items()}
    other[("extra", "fam")] = 5.0  # a cell the base lacks is ignored
    p = paired(base, other)
    assert p.n == 10 and p.high < 0
    assert "worse" in p.line("x", "engine")
    with pytest.raises(ValueError, match="no cell"):
        paired(base, {("other", "fam"): 1.0})


def test_report_compares_every_method_with_the_base():
    rows = [dict(item=f"i{i}", family="f", method=m, ratio=r)
            for i in range(5) for m, r in (("engine", 0.8), ("iou", 0.7), ("variant", 0.8))]
    lines = report(rows, "engine")
    assert len(lines) == 2
    assert lines[0].startswith("iou") and "worse" in lines[0]
    assert lines[1].startswith("variant") and "ties 5" in lines[1]
    assert report(rows, "missing") == []


def test_against_another_checkout_counts_cells_with_identical_output():
    # the same benchmark on two checkouts: only the base method of each is compared, cell
    # by cell, and a cell counts as identical only when both fingerprints exist and agree
    these = [dict(item=f"i{i}", family="f", method=m, ratio=0.8, out=f"h{i}")
             for i in range(4) for m in ("engine", "iou")]
    other = [dict(item=f"i{i}", family="f", method="engine", ratio=0.8 + (0.1 if i == 3 else 0.0),
                  out=f"h{i}" if i < 2 else "changed") for i in range(4)]
    other[0].pop("out")  # an old run without fingerprints is never identical
    line, same = against(these, other, "engine")
    assert line.startswith("engine (other)") and "vs engine (these)" in line and "over 4 cells" in line
    assert "wins 1, losses 0, ties 3" in line
    assert same == "identical output on 1 of 4 cells"


def test_fingerprint_tells_label_maps_apart_whatever_their_integer_type():
    a = [np.arange(12).reshape(3, 4), np.zeros((3, 4))]
    assert fingerprint(a) == fingerprint([x.astype(np.uint16) for x in a])
    b = [a[0].copy(), a[1].copy()]
    b[1][2, 3] = 1
    assert fingerprint(b) != fingerprint(a)


def test_fewer_id_switches_are_better():
    rows = [dict(item=f"i{i}", family="f", method=m, sw=s) for i in range(10) for m, s in (("engine", 1.0), ("v", 0.5))]
    assert report(rows, "engine", "sw")[0].endswith("wins 10, losses 0, ties 0: better")
    assert report(rows, "v", "sw")[0].endswith(": worse")

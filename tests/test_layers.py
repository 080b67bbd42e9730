"""The package layering (issue 15): the app layer `diffseg` above `volume`, `volume` above
`temporal`, all above `diffseg_core`; no module imports a layer above its own, lazily or not.
The contract is declared in pyproject.toml ([tool.importlinter]) and checked by import-linter."""
from __future__ import annotations

import shutil
import sys

from importlinter.cli import lint_imports

from .conftest import REPO


def test_layers_contract_is_kept():
    assert lint_imports(config_filename=str(REPO / "pyproject.toml")) == 0


def test_layers_contract_bites_on_a_lazy_import(tmp_path, monkeypatch):
    # a copy of the packages where the core imports `temporal` inside a function: broken
    for pkg in ("diffseg", "diffseg_core", "temporal", "volume"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    io = tmp_path / "diffseg_core" / "io.py"
    io.write_text(io.read_text() + "\n\ndef _sneaky():\n    from temporal import tracker  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m.split(".")[0] in ("diffseg", "diffseg_core", "temporal", "volume")]:
        monkeypatch.delitem(sys.modules, name)  # (find_spec answers from sys.modules first)
    assert lint_imports(config_filename=str(tmp_path / "pyproject.toml")) == 1

"""The pytest plugin of ddspec (entry point ``pytest11``: ``ddspec = "ddspec.testing.pytest_plugin"``), opt-in.

``pytest --ddspec-specs DIR`` (repeatable) adds one test item per ``*.yaml`` or ``*.yml`` spec in DIR: it
validates and analyses the spec (an item fails with every error finding's code, spec path and fix) and smoke-runs
it (:func:`ddspec.testing.run_smoke`: shrunk, run, evaluated, artifact contract checked) into a temporary folder,
deleted when the item ends. Without the option the plugin adds nothing. The fixture ``ddspec_run_dir`` is a fresh
folder for a run (``tmp_path / "run"``), for a test that keeps its run folder as pytest keeps ``tmp_path``.

This module imports nothing heavy: pytest loads it in every session of an environment where ddspec is installed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

OPTION = "--ddspec-specs"
#: The file suffixes of the specs collected.
SUFFIXES = (".yaml", ".yml")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("ddspec").addoption(
        OPTION, action="append", default=[], metavar="DIR", dest="ddspec_specs",
        help="validate and smoke-run every *.yaml / *.yml spec in DIR, one test item each (repeatable)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Append the spec items (before -k / -m deselect, which run after this hook)."""
    for folder in config.getoption("ddspec_specs"):
        path = (config.invocation_params.dir / folder).resolve()
        if not path.is_dir():
            raise pytest.UsageError(f"{OPTION} {folder}: no such folder")
        for spec in sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file()):
            items.extend(SpecFile.from_parent(session, path=spec).collect())


class SpecFile(pytest.File):
    """A spec file: one item."""

    def collect(self) -> list[pytest.Item]:
        return [SpecItem.from_parent(self, name=self.path.stem)]


class SpecItem(pytest.Item):
    """Validate, analyse and smoke-run one spec file."""

    def runtest(self) -> None:
        from ddspec.testing.smoke import run_smoke
        from ddspec.testing.wellposed import compiled

        compiled(self.path)  # NotWellPosed with every finding when it has errors
        with tempfile.TemporaryDirectory(prefix=f"ddspec-{self.path.stem}-") as tmp:
            run_smoke(self.path, Path(tmp) / "run")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        """A failed check's message (codes, paths, fixes) without a traceback; anything else as usual."""
        from ddspec.errors import DDSpecError
        from ddspec.testing.errors import CheckFailed, NotApplicable

        if isinstance(excinfo.value, CheckFailed | NotApplicable | DDSpecError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"ddspec spec {self.path.name}"


@pytest.fixture
def ddspec_run_dir(tmp_path: Path) -> Path:
    """A fresh folder for one run (``tmp_path / "run"``, not created yet: a run creates it)."""
    return tmp_path / "run"

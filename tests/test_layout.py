"""The import direction of the layout (README, "How it works"): the harness (perfkit's flow modules, perfkit.measure,
perfkit.results, perfkit.workloads, perfkit.support, perfkit.backends and the kernels) never imports the application
layer, and only the application layer (perfkit.app, the studies and the dashboards) imports the studies or the
dashboards. Imports inside functions count: they are how a module reaches the layer above it."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Folder of the checkout -> the dotted package it installs as.
PACKAGES = {"perfkit": "perfkit", "kernels": "perfkit.kernels", "studies": "perfkit.studies",
            "dashboards": "perfkit.dashboards"}
APP = ("perfkit.app", "perfkit.studies", "perfkit.dashboards")
ENTRY_POINTS = ("perfkit.__main__",)  # runs the CLI; nobody imports it


def module_names(root: Path) -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in (root / folder).rglob("*.py"):
            parts = path.relative_to(root / folder).with_suffix("").parts
            name = ".".join((package,) + parts).removesuffix(".__init__")
            out[name] = path
    return out


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every perfkit import in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "perfkit" or name.startswith("perfkit.")]


def _within(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def import_violations(root: Path) -> list[str]:
    """Every import against the layout's direction, as 'file:line: importer imports imported (why)'."""
    bad = []
    for importer, path in sorted(module_names(root).items()):
        if importer in ENTRY_POINTS:
            continue
        for line, imported in imports_of(path):
            where = f"{path.relative_to(root)}:{line}: {importer} imports {imported}"
            if not _within(importer, APP) and _within(imported, APP):
                bad.append(f"{where} (the harness never imports the application layer)")
    return bad


def test_the_harness_never_imports_the_application_layer():
    assert import_violations(ROOT) == []


def test_the_check_finds_a_planted_wrong_import(tmp_path):
    for folder in PACKAGES:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    runner = tmp_path / "perfkit" / "runner.py"
    runner.write_text(runner.read_text() + "\n\ndef _planted():\n    from perfkit.app.campaign import run_campaign\n")
    monitors = tmp_path / "perfkit" / "measure" / "timer.py"
    monitors.write_text(monitors.read_text() + "\nimport perfkit.studies\n")
    found = import_violations(tmp_path)
    assert len(found) == 2, found
    assert "perfkit.runner imports perfkit.app.campaign.run_campaign" in found[1] or \
        "perfkit.runner imports perfkit.app.campaign.run_campaign" in found[0]
    assert any("perfkit.measure.timer imports perfkit.studies" in f for f in found)


def test_every_package_folder_is_a_package_the_wheel_installs():
    """A subpackage without __init__.py would be a namespace package (and perfkit's __path__ also holds the checkout
    root); one missing from pyproject's list would be left out of the wheel."""
    text = (ROOT / "pyproject.toml").read_text()
    for folder in (ROOT / "perfkit").iterdir():
        if folder.is_dir() and folder.name != "__pycache__":
            assert (folder / "__init__.py").is_file(), folder
            assert f'"perfkit.{folder.name}"' in text, folder.name

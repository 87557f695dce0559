"""`perfkit dashboard` and PNG export."""
from __future__ import annotations

import shutil

import pytest

from perfkit.app.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_dashboard_writes_a_report(tmp_path, cpu_store, capsys):
    out = tmp_path / "report.html"
    assert main(["dashboard", "--store", str(cpu_store), "-o", str(out)]) == 0
    assert out.is_file() and 'data-perfkit-figures="' in out.read_text()
    assert "figures in" in capsys.readouterr().out


def test_dashboard_takes_several_stores_and_benchmarks(tmp_path, cpu_store, gpu_store, benchmarks_dir):
    out = tmp_path / "report.html"
    assert main(["dashboard", "--store", str(cpu_store), str(gpu_store), "-o", str(out), "--benchmarks",
                 str(benchmarks_dir)]) == 0
    html = out.read_text()
    assert 'id="machines"' in html and 'id="regression"' in html


def test_dashboard_finds_dot_benchmarks_by_default(tmp_path, cpu_store, benchmarks_dir, monkeypatch):
    shutil.copytree(benchmarks_dir, tmp_path / ".benchmarks")
    monkeypatch.chdir(tmp_path)
    assert main(["dashboard", "--store", str(cpu_store)]) == 0
    assert 'id="regression"' in (tmp_path / "report.html").read_text()


def test_dashboard_errors(tmp_path, cpu_store, capsys):
    assert main(["dashboard", "--store", str(tmp_path / "missing.db"), "-o", str(tmp_path / "r.html")]) == 1
    assert "no perfkit store" in capsys.readouterr().err
    assert main(["dashboard", "--store", str(cpu_store), "--benchmarks", str(tmp_path / "nope")]) == 2
    assert not (tmp_path / "r.html").exists()


def test_png_export_without_a_browser_says_how_to_get_one(monkeypatch, tmp_path, cpu_report):
    pytest.importorskip("kaleido")
    from perfkit.dashboards import NoBrowserError, export
    from perfkit.dashboards import export_png

    monkeypatch.setattr(export, "find_browser", lambda: None)
    with pytest.raises(NoBrowserError, match="apt-get install chromium"):
        export_png(cpu_report, tmp_path / "png")


def test_find_browser_honours_the_environment(monkeypatch, tmp_path):
    from perfkit.dashboards.export import find_browser

    fake = tmp_path / "my-chrome"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PERFKIT_BROWSER", str(fake))
    assert find_browser() == str(fake)
    monkeypatch.delenv("PERFKIT_BROWSER")
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert find_browser() == str(fake)
    monkeypatch.delenv("BROWSER_PATH")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_browser() is None


def test_png_export_through_kaleido_and_chromium(tmp_path, cpu_store, chromium, capsys):
    pytest.importorskip("kaleido")
    out = tmp_path / "png"
    assert main(["dashboard", "--store", str(cpu_store), "-o", str(tmp_path / "r.html"), "--png", str(out)]) == 0
    from perfkit.dashboards import build

    names = [f.name for f in build([cpu_store]).figures]
    pngs = sorted(out.glob("*.png"))
    assert [p.name.split("-", 1)[1][:-4] for p in pngs] == names
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000

"""The files a plain `pip install` ships: the example config and the systemd
units live once, in the package, get into the wheel, and `dynasync example`
prints them byte for byte."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_cli import DYNASYNC

from dynasync import examples

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "src" / "dynasync" / "shipped"
EXAMPLE_DATABASE = 'database = "/var/lib/app/app.db"'


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the source tree (building in place would
    leave build/ and egg-info behind in the checkout)."""
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src" / "dynasync", tree / "src" / "dynasync",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(tree)],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    [built] = out.glob("dynasync-*.whl")
    return built


def test_shipped_files_live_once_in_the_package() -> None:
    assert sorted(p.name for p in SHIPPED.iterdir()) == sorted(examples.FILES.values())
    # The source tree's copies are symlinks to the packaged files, not second copies.
    for checkout, name in [("config.example.toml", "config.example.toml"),
                           ("systemd/dynasync.service", "dynasync.service"),
                           ("systemd/dynasync@.service", "dynasync@.service")]:
        path = ROOT / checkout
        assert path.is_symlink(), f"{checkout} should be a symlink into src/dynasync/shipped/"
        assert path.resolve() == (SHIPPED / name).resolve(), checkout
    assert sorted(p.name for p in (ROOT / "systemd").iterdir()) == ["dynasync.service", "dynasync@.service"]


def test_library_reads_the_packaged_files() -> None:
    for name, file in examples.FILES.items():
        assert examples.text(name) == (SHIPPED / file).read_text(encoding="utf-8")


def test_wheel_contains_the_shipped_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "dynasync/examples.py" in names
        for file in examples.FILES.values():
            assert f"dynasync/shipped/{file}" in names, file
            assert z.read(f"dynasync/shipped/{file}") == (SHIPPED / file).read_bytes(), file


def test_an_installed_wheel_prints_its_own_files(wheel: Path, tmp_path: Path) -> None:
    """No source tree: the wheel unpacked on its own, first on sys.path."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import dynasync; print(dynasync.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout
    for name, file in examples.FILES.items():
        p = subprocess.run([sys.executable, "-m", "dynasync", "example", name],
                           capture_output=True, env=env, cwd=tmp_path, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout == (SHIPPED / file).read_bytes(), name


def _example(name: str) -> str:
    p = subprocess.run([DYNASYNC, "example", name], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr, p.stderr
    return p.stdout


def test_cli_prints_the_packaged_files() -> None:
    for name, file in examples.FILES.items():
        assert _example(name) == (SHIPPED / file).read_text(encoding="utf-8"), name


def test_cli_needs_no_config_and_refuses_unknown_names(tmp_path: Path) -> None:
    env = {**os.environ, "DYNASYNC_CONFIG": str(tmp_path / "missing.toml")}
    p = subprocess.run([DYNASYNC, "example", "unit"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0 and "ExecStart=" in p.stdout
    p = subprocess.run([DYNASYNC, "example", "nope"], capture_output=True, text=True)
    assert p.returncode == 2 and "invalid choice" in p.stderr and p.stdout == ""


def _config_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DYNASYNC, "config", "check", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_printed_config_passes_config_check(tmp_path: Path) -> None:
    printed = _example("config")
    path = tmp_path / "config.toml"
    path.write_text(printed)
    # As printed: it parses; the one problem is that /var/lib/app/app.db is not here.
    p = _config_check(path)
    assert p.returncode == 1, p.stdout
    assert p.stdout.splitlines()[:-1] == [f"{path}: [source] database /var/lib/app/app.db does not exist"]
    # Pointed at a database with the example's table, it is valid as it stands.
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, name TEXT)")
    conn.close()
    assert printed.count(EXAMPLE_DATABASE) == 1
    path.write_text(printed.replace(EXAMPLE_DATABASE, f'database = "{db}"'))
    p = _config_check(path)
    assert p.returncode == 0, p.stdout
    assert p.stdout.strip() == f"config check: {path} is valid"


@pytest.mark.parametrize("name", ["unit", "template-unit"])
def test_printed_units_reload_with_sighup(name: str) -> None:
    lines = _example(name).splitlines()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert sum(line.startswith("ExecReload=") for line in lines) == 1

"""Fails when a CLI command, an option or a config key is undocumented."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from dynasync import cli, config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLE = (ROOT / "config.example.toml").read_text()


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_command_and_option_is_in_the_readme() -> None:
    for name, sub in _subparsers().items():
        assert f"dynasync {name}" in README, f"command {name} undocumented"
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                for verb in action.choices:
                    assert f"dynasync {name} {verb}" in README, f"command {name} {verb} undocumented"
        for action in sub._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt not in ("--help", "--verbose", "--config"):
                    assert opt in README, f"option {opt} of {name} undocumented"
    assert "--config PATH" in README and "--verbose" in README


def test_every_config_key_is_in_readme_and_example() -> None:
    example = tomllib.loads(EXAMPLE)
    for section, defaults in config.DEFAULTS.items():
        for key in defaults:
            assert f"[{section}] {key}" in README, f"[{section}] {key} not in README"
            assert f"{key} =" in EXAMPLE, f"[{section}] {key} not in config.example.toml"
            if defaults[key] is not None:
                assert example[section][key] == defaults[key], f"example default of {key} differs"
    for key in config.TABLE_KEYS:
        assert f"[[tables]] {key}" in README, f"[[tables]] {key} not in README"
        assert f"{key} =" in EXAMPLE, f"[[tables]] {key} not in config.example.toml"
    assert "[source] database" in README


def test_readme_gives_the_two_commands() -> None:
    assert "scripts/demo" in README and "scripts/test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci

"""The files dynasync ships inside the package, so that a plain `pip install`
has them too: the example config and the two systemd units. They live once, in
`dynasync/shipped/`; the source tree's `config.example.toml` and `systemd/`
are symlinks to them. `dynasync example NAME` prints one."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

# name on the command line -> file in dynasync/shipped/
FILES: dict[str, str] = {
    "config": "config.example.toml",
    "unit": "dynasync.service",
    "template-unit": "dynasync@.service",
}
NAMES: tuple[str, ...] = tuple(FILES)


def resource(name: str) -> Traversable:
    """The shipped file for `name` (one of NAMES), wherever the package is installed."""
    return files("dynasync") / "shipped" / FILES[name]


def text(name: str) -> str:
    """The content of the shipped file for `name`, exactly as shipped."""
    return resource(name).read_text(encoding="utf-8")

"""The `dynasync` command: parse arguments, make one library call, print the
result. Errors are one line on stderr; --verbose adds the traceback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from dynasync import __version__, config, logs
from dynasync.app import App
from dynasync.exceptions import DynasyncError
from dynasync.status import DEFAULT_MAX_LAG

Handler = Callable[[App, argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Handler]] = {}


def command(name: str, help_text: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = (help_text, fn)
        return fn

    return register


def _progress(label: str, unit: str = "rows") -> Callable[..., None] | None:
    """A progress bar on stderr, only on a terminal: quiet under systemd and in pipes."""
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def show(table: str, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and (total is None or done < total):
            return
        last[0] = now
        width = 30
        if total:
            filled = int(width * min(done, total) / total)
            bar = "#" * filled + "-" * (width - filled)
            sys.stderr.write(f"\r{label} {table}: [{bar}] {done}/{total} {unit}")
        else:
            sys.stderr.write(f"\r{label} {table}: {done} {unit}")
        sys.stderr.flush()

    return show


def _end_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\n")


@command("init", "install the changelog, state tables and capture triggers; create DynamoDB tables")
def _init(app: App, args: argparse.Namespace) -> int:
    from dynasync.capture import init

    result = init(app, dry_run=args.dry_run)
    if args.dry_run:
        for stmt in result.plan.statements:
            print(stmt + ";")
        if not result.plan.statements:
            print("-- nothing to do: capture is installed and up to date")
        return 0
    changed = len(result.plan.statements)
    print(f"init: {changed} schema statement(s) applied" if changed else "init: already up to date")
    for table in result.created_tables:
        print(f"init: created DynamoDB table {table}")
    return 0


@command("backfill", "copy every existing row to DynamoDB (resumable)")
def _backfill(app: App, args: argparse.Namespace) -> int:
    from dynasync.backfill import backfill

    started = time.monotonic()
    result = backfill(app, [args.table] if args.table else None, _progress("backfill"))
    _end_progress()
    for t in result.tables:
        extra = f", {t.rejected} dead letter(s)" if t.rejected else ""
        print(f"backfill: {t.table}: {t.rows} row(s) copied{extra}")
    if result.catch_up and result.catch_up.entries:
        print(f"backfill: applied {result.catch_up.entries} change(s) made meanwhile")
    print(f"backfill: done in {time.monotonic() - started:.2f}s")
    return 0


@command("sync", "apply every pending change once, then exit")
def _sync(app: App, args: argparse.Namespace) -> int:
    from dynasync.syncpass import sync

    r = sync(app, _progress("sync", "changes"))
    _end_progress()
    print(
        f"sync: {r.entries} change(s) -> {r.applied} write(s), {r.rejected} dead letter(s), "
        f"high-water mark {r.high_water_mark}, in {r.seconds:.2f}s"
    )
    return 0


@command("run", "the daemon: sync on an interval and whenever the database changes")
def _run(app: App, args: argparse.Namespace) -> int:
    from dynasync.daemon import run

    return run(app)


@command("status", "show the backlog, dead letters and position")
def _status(app: App, args: argparse.Namespace) -> int:
    from dynasync.status import status

    s = status(app, max_lag=args.max_lag)
    code = s.exit_code if args.check else 0
    if args.json:
        print(json.dumps(s.to_json(), sort_keys=True))
        return code
    print(f"health:          {s.health.upper()}" + "".join(f"\n  - {p}" for p in s.problems))
    print(f"database:        {s.database}")
    print(f"installed:       {'yes' if s.installed else 'no (run dynasync init)'}")
    print(f"daemon running:  {'yes' if s.running else 'no'}")
    print(f"high-water mark: {s.high_water_mark} (changelog at {s.last_seq})")
    print(f"pending changes: {s.pending_changes}")
    print(f"dead letters:    {s.dead_letters}")
    print(f"last pass:       {_ago(s.last_pass)}")
    print(f"{'table':<24} {'pending':>8} {'dead':>6} {'lag':>8}  {'last applied':<14} backfill")
    for name, t in s.tables.items():
        lag = "-" if t.lag_seconds is None else f"{t.lag_seconds:.1f}s"
        print(
            f"{name:<24} {t.pending:>8} {t.dead_letters:>6} {lag:>8}  {_ago(t.last_applied):<14} "
            f"{t.backfill} ({t.backfill_rows} rows)"
        )
    return code


def _ago(when: float | None) -> str:
    if when is None:
        return "never"
    return f"{max(0.0, time.time() - when):.0f}s ago"


@command("verify", "compare SQLite with DynamoDB; --repair writes what differs")
def _verify(app: App, args: argparse.Namespace) -> int:
    from dynasync.verify import verify

    r = verify(app, [args.table] if args.table else None, repair=args.repair, progress=_progress("verify"))
    _end_progress()
    for t in r.tables:
        print(
            f"verify: {t.table} -> {t.target}: {t.rows} row(s), {t.items} item(s); missing {t.missing}, "
            f"different {t.different}, extra {t.extra}, unsyncable {t.unsyncable}"
            + (f"; repaired {t.repaired}" if r.repair else "")
        )
        for line in t.examples:
            print(f"  {line}")
    print("verify: in sync" if r.in_sync else f"verify: {r.remaining} difference(s) remain")
    return 0 if r.in_sync else 1


@command("uninstall", "remove the triggers and dynasync's own tables")
def _uninstall(app: App, args: argparse.Namespace) -> int:
    from dynasync.capture import uninstall

    statements = uninstall(app)
    print(f"uninstall: removed capture ({len(statements)} statement(s)); application tables untouched")
    return 0


@command("dead-letters", "list rows DynamoDB refused; --retry queues them again")
def _dead_letters(app: App, args: argparse.Namespace) -> int:
    from dynasync import deadletters

    if args.retry:
        r = deadletters.retry(app, args.table, _progress("retry", "changes"))
        _end_progress()
        how = "applied now" if r.pass_result else "the running daemon will apply them"
        print(f"dead-letters: queued {r.queued} row(s) again ({how}); {r.remaining} remain")
        return 0
    rows = deadletters.list_dead_letters(app, args.table)
    if args.json:
        print(json.dumps([_dead_json(d) for d in rows]))
        return 0
    for d in rows:
        key = d.k1 if d.k2 is None else (d.k1, d.k2)
        print(f"{d.table}\t{key!r}\t{d.attempts} attempt(s)\t{d.reason}")
    print(f"dead-letters: {len(rows)}")
    return 0


def _dead_json(d: Any) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        return v.hex() if isinstance(v, bytes) else v

    return {
        "table": d.table,
        "key": [plain(d.k1)] if d.k2 is None else [plain(d.k1), plain(d.k2)],
        "reason": d.reason,
        "attempts": d.attempts,
        "first_failed": d.first_failed,
        "last_failed": d.last_failed,
    }


def config_check(args: argparse.Namespace) -> int:
    """`dynasync config check` runs without a working config, so it is not an App command."""
    path, problems = config.check(args.config)
    for line in problems:
        print(line)
    if problems:
        print(f"config check: {len(problems)} problem(s) in {path}")
        return 1
    print(f"config check: {path} is valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynasync", description="Keep DynamoDB in sync with SQLite.")
    parser.add_argument("--version", action="version", version=f"dynasync {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", help="config file (default: $DYNASYNC_CONFIG, then ./dynasync.toml)"
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    common.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="key=value lines (default) or JSON"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        if name == "init":
            p.add_argument("--dry-run", action="store_true", help="print the SQL instead of running it")
        if name in ("backfill", "verify", "dead-letters"):
            p.add_argument("--table", metavar="NAME", help="only this source table")
        if name in ("status", "dead-letters"):
            p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "status":
            p.add_argument("--check", action="store_true",
                           help="exit 0 healthy, 1 warning, 2 critical (for monitoring probes)")
            p.add_argument("--max-lag", type=float, default=DEFAULT_MAX_LAG, metavar="SECONDS",
                           help="with pending changes, no progress for longer than this is critical")
        if name == "verify":
            p.add_argument("--repair", action="store_true", help="write missing/different, delete extra")
        if name == "dead-letters":
            p.add_argument("--retry", action="store_true", help="queue every dead letter again")
    cfg = sub.add_parser("config", help="work with the config file", description="work with the config file")
    cfg_sub = cfg.add_subparsers(dest="action", required=True, metavar="ACTION")
    cfg_sub.add_parser("check", parents=[common], help="validate the config file and list every problem")
    return parser


def main(argv: Sequence[str] | None = None, target_factory: Any = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO if args.command == "run" else logging.WARNING
    logs.setup(level, args.log_format)
    if args.command == "config":
        return config_check(args)
    _, handler = COMMANDS[args.command]
    try:
        cfg = config.load(args.config)
        app = App(cfg, target_factory) if target_factory else App(cfg)
        with app:
            return handler(app, args)
    except DynasyncError as e:
        if args.verbose:
            traceback.print_exc()
        print(f"dynasync {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # an unexpected failure is still one line unless --verbose
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else " (run with --verbose for the traceback)"
        print(f"dynasync {args.command}: error: {type(e).__name__}: {e}{hint}", file=sys.stderr)
        return 1

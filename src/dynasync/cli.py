"""The `dynasync` command: parse arguments, make one library call, print the
result. Errors are one line on stderr; --verbose adds the traceback."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dynasync import __version__, config, configcheck, examples, fleet, logs
from dynasync.app import App, TargetFactory, default_target
from dynasync.exceptions import DynasyncError, UsageError
from dynasync.notify import Notifier
from dynasync.progress import Bars
from dynasync.state import DeadLetter
from dynasync.status import DEFAULT_MAX_LAG

Handler = Callable[[App, argparse.Namespace], int]
# What wraps a command's run over every database (one, or a fleet's), given the
# App of the whole run: an export that gathers each database's part, then goes out once.
Session = Callable[[App, argparse.Namespace], contextlib.AbstractContextManager[None]]


@dataclass(frozen=True)
class Flag:
    """One command-line option of a command: its name and argparse keywords."""

    name: str
    options: dict[str, Any]


def flag(name: str, help_text: str, **options: Any) -> Flag:
    """An option: a boolean switch unless it takes a value (has a metavar)."""
    if "metavar" not in options:
        options["action"] = "store_true"
    return Flag(name, {"help": help_text, **options})


TABLE = flag("--table", "only this source table", metavar="NAME")
# Cyclic-garbage collection runs after this many new container objects (Python's default: 700).
GC_THRESHOLD = 10_000
JSON = flag("--json", "machine-readable output")


@dataclass(frozen=True)
class Command:
    """A subcommand: its help, handler and options."""

    help: str
    handler: Handler
    flags: tuple[Flag, ...] = ()
    session: Session | None = None


COMMANDS: dict[str, Command] = {}


def command(
    name: str, help_text: str, *flags: Flag, session: Session | None = None
) -> Callable[[Handler], Handler]:
    """Register a subcommand with its options."""

    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(help_text, fn, flags, session)
        return fn

    return register


def session(app: App, args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """The command's session around its run over every database, if it has one."""
    make = COMMANDS[args.command].session
    return make(app, args) if make is not None else contextlib.nullcontext()


@command(
    "init",
    "install the changelog, state tables and capture triggers; create DynamoDB tables",
    flag("--dry-run", "print the SQL instead of running it"),
    flag("--takeover", "this config replaces the one that set the database up"),
)
def _init(app: App, args: argparse.Namespace) -> int:
    from dynasync.capture import init

    result = init(app, dry_run=args.dry_run, takeover=args.takeover)
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


@command("backfill", "copy every existing row to DynamoDB (resumable)", TABLE)
def _backfill(app: App, args: argparse.Namespace) -> int:
    from dynasync.backfill import backfill

    started = time.monotonic()
    with Bars("backfill") as bars:
        result = backfill(app, [args.table] if args.table else None, bars)
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

    with Bars("sync", "changes") as bars:
        r = sync(app, bars)
    print(
        f"sync: {r.entries} change(s) -> {r.applied} write(s), {r.rejected} dead letter(s), "
        f"high-water mark {r.high_water_mark}, in {r.seconds:.2f}s"
    )
    return 0


@command("run", "the daemon: sync on an interval and whenever the database changes")
def _run(app: App, args: argparse.Namespace) -> int:
    from dynasync.daemon import run

    return run(app)


@command(
    "status",
    "show the backlog, dead letters and position",
    JSON,
    flag("--check", "exit 0 healthy, 1 warning, 2 critical (for monitoring probes)"),
    flag("--max-lag", "with pending changes, no progress for longer than this is critical",
         type=float, default=DEFAULT_MAX_LAG, metavar="SECONDS"),
)
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
    if s.identity_change is not None:
        print(f"file changed:    {_ago(s.identity_change_at)}: {s.identity_change}; every table reconciled")
    if s.s3_objects:
        print(f"S3 objects:      {s.s3_objects} ({s.s3_items_to_clean} item(s) to clean up after)")
    print(f"{'table':<24} {'pending':>8} {'dead':>6} {'lag':>8}  {'last applied':<14} backfill")
    for name, t in s.tables.items():
        lag = "-" if t.lag_seconds is None else f"{t.lag_seconds:.1f}s"
        print(
            f"{name:<24} {t.pending:>8} {t.dead_letters:>6} {lag:>8}  {_ago(t.last_applied):<14} "
            f"{t.backfill} ({t.backfill_rows} rows)"
        )
    for name, t in s.tables.items():
        if t.reconcile is not None:
            r = t.reconcile
            print(f"reconciling {name}: {r['phase']} ({r['rows']} row(s) checked, {r['written']} written; "
                  f"{r['items']} item(s) checked, {r['deleted']} deleted)")
    return code


def _ago(when: float | None) -> str:
    if when is None:
        return "never"
    return f"{max(0.0, time.time() - when):.0f}s ago"


@command(
    "verify",
    "compare SQLite with DynamoDB; --repair writes what differs",
    TABLE,
    flag("--repair", "write missing/different, delete extra"),
)
def _verify(app: App, args: argparse.Namespace) -> int:
    from dynasync.verify import verify

    with Bars("verify") as bars:
        r = verify(app, [args.table] if args.table else None, repair=args.repair, progress=bars)
    for t in r.tables:
        print(
            f"verify: {t.table} -> {t.target}: {t.rows} row(s), {t.items} item(s); missing {t.missing}, "
            f"different {t.different}, extra {t.extra}, unsyncable {t.unsyncable}"
            + (f", orphan objects {t.orphans}" if t.orphans else "")
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


@contextlib.contextmanager
def _exporting(app: App, args: argparse.Namespace) -> Iterator[None]:
    """`dead-letters --export`: one export that each database adds to, put in place at the end."""
    if not args.export:
        yield
        return
    if args.retry or args.json:
        raise UsageError("dead-letters: --export cannot be combined with --retry or --json")
    from dynasync import export

    sink = export.Export(export.destination(args.export))
    args.export_to = sink
    try:
        yield
        sink.finish(app)
    finally:
        sink.close()
    print(f"dead-letters: exported {sink.count} dead letter(s) to {sink.destination}")


@command(
    "dead-letters",
    "list rows DynamoDB refused; --retry queues them again; --export writes them as JSON Lines",
    TABLE,
    JSON,
    flag("--retry", "queue every dead letter again"),
    flag("--export", "write every dead letter, with its row as it is now, as JSON Lines to a file "
         "(mode 0600) or to an S3 object", metavar="PATH|s3://BUCKET/PREFIX"),
    session=_exporting,
)
def _dead_letters(app: App, args: argparse.Namespace) -> int:
    from dynasync import deadletters

    if args.export:
        args.export_to.add(app, args.table)
        return 0
    if args.retry:
        with Bars("retry", "changes") as bars:
            r = deadletters.retry(app, args.table, bars)
        how = "applied now" if r.pass_result else "the running daemon will apply them"
        print(f"dead-letters: queued {r.queued} row(s) again ({how}); {r.remaining} remain")
        return 0
    rows = deadletters.list_dead_letters(app, args.table)
    if args.json:
        print(json.dumps([_dead_json(d) for d in rows]))
        return 0
    for d in rows:
        key = d.key[0] if len(d.key) == 1 else d.key
        print(f"{d.table}\t{key!r}\t{d.attempts} attempt(s)\t{d.reason}")
    print(f"dead-letters: {len(rows)}")
    return 0


def _dead_json(d: DeadLetter) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        return v.hex() if isinstance(v, bytes) else v

    return {
        "table": d.table,
        "key": [plain(v) for v in d.key],
        "reason": d.reason,
        "attempts": d.attempts,
        "first_failed": d.first_failed,
        "last_failed": d.last_failed,
    }


def each_database(cfg: config.Config, args: argparse.Namespace, target_factory: TargetFactory) -> int:
    """A command on each database of a fleet in turn (or the one --database names),
    sharing one DynamoDB client; the worst exit status."""
    if args.command == "status":
        return fleet_status(cfg, args)
    code = 0
    with App(cfg, target_factory) as shared, session(shared, args):
        for database, member in fleet.configs(cfg, args.database):
            if cfg.databases is not None:
                print(f"== {database}", flush=True)
            try:
                if isinstance(member, DynasyncError):
                    raise member
                with App(member, target_factory, shared=shared) as app:
                    code = max(code, COMMANDS[args.command].handler(app, args))
            except DynasyncError as e:
                print(f"dynasync {args.command}: {database}: error: {e}", file=sys.stderr)
                code = max(code, e.exit_code)
    return code


def fleet_status(cfg: config.Config, args: argparse.Namespace) -> int:
    """`status` for a fleet: the summary, then one line per database."""
    from dynasync.status import status

    def status_of(member: config.Config) -> Any:
        with App(member) as app:
            return status(app, max_lag=args.max_lag)

    s = fleet.summarize(cfg, status_of, args.database)
    code = s.exit_code if args.check else 0
    if args.json:
        print(json.dumps(s.to_json(), sort_keys=True))
        return code
    worst = f" (worst lag {s.worst_lag_seconds}s: {s.worst_lag_database})" if s.worst_lag_database else ""
    print(f"databases: {s.databases}: {s.healthy} healthy, {s.behind} behind, {s.failing} failing{worst}")
    print(f"{'database':<40} {'health':<9} {'pending':>8} {'dead':>6} {'lag':>8}")
    for name, st in s.statuses.items():
        lag = "-" if st["lag_seconds"] is None else f"{st['lag_seconds']:.1f}s"
        print(f"{name:<40} {st['health']:<9} {st['pending_changes']:>8} {st['dead_letters']:>6} {lag:>8}")
    for name, error in s.errors.items():
        print(f"{name:<40} error: {error}")
    return code


def config_check(args: argparse.Namespace) -> int:
    """`dynasync config check` runs without a working config, so it is not an App command."""
    path, problems = configcheck.check(args.config)
    for line in problems:
        print(line)
    if problems:
        print(f"config check: {len(problems)} problem(s) in {path}")
        return 1
    print(f"config check: {path} is valid")
    return 0


def example(args: argparse.Namespace) -> int:
    """`dynasync example NAME` prints a file dynasync ships, byte for byte; it needs no config."""
    sys.stdout.write(examples.text(args.name))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, built from the command table."""
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
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=cmd.help, description=cmd.help)
        for f in cmd.flags:
            p.add_argument(f.name, **f.options)
        if name != "run":
            p.add_argument("--database", metavar="PATH", help="only this database of a fleet")
    cfg = sub.add_parser("config", help="work with the config file", description="work with the config file")
    cfg_sub = cfg.add_subparsers(dest="action", required=True, metavar="ACTION")
    cfg_sub.add_parser("check", parents=[common], help="validate the config file and list every problem")
    what = "print a file dynasync ships: the example config or a systemd unit"
    ex = sub.add_parser("example", help=what, description=what)
    ex.add_argument("name", choices=examples.NAMES, metavar="NAME",
                    help=", ".join(f"{n} ({f})" for n, f in examples.FILES.items()))
    return parser


def tune_gc() -> None:
    """Collect cyclic garbage less often than Python's default, for the process.

    A pass holds every item of its slice (a few small dicts per row) until
    DynamoDB acknowledges them, so with the default threshold of 700 the
    collector runs every hundred rows and, as those survivors pile up,
    re-traverses them in full collections: measured at a third of sync's CPU
    per change. dynasync makes few reference cycles, so a larger first
    generation costs little memory. Freezing the modules imported at start-up
    keeps them out of every later full collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def main(argv: Sequence[str] | None = None, target_factory: TargetFactory = default_target) -> int:
    """Run one command; returns its exit status."""
    args = build_parser().parse_args(argv)
    if argv is None:  # the console command owns its process; a caller of main() keeps its own collector
        tune_gc()
    if args.command == "example":  # needs no config and logs nothing
        return example(args)
    level = logging.DEBUG if args.verbose else logging.INFO if args.command == "run" else logging.WARNING
    logs.setup(level, args.log_format)
    if args.command == "config":
        return config_check(args)
    try:
        cfg = config.load(args.config)
        if args.command != "run" and cfg.databases is not None:
            return each_database(cfg, args, target_factory)
        if args.command != "run" and args.database:
            fleet.select(cfg, args.database)  # one database's config: it must name that one
        # Only the daemon runs under a systemd watchdog that long work must ping.
        heartbeat = Notifier().watchdog if args.command == "run" else None
        with App(cfg, target_factory, heartbeat=heartbeat) as app, session(app, args):
            return COMMANDS[args.command].handler(app, args)
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

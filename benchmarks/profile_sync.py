"""Profile one `sync` of 30,000 pending changes with pyinstrument and print
where the time goes. Usage: .venv/bin/python benchmarks/profile_sync.py"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import DynamoDBLocal, make_db, new_table, run_dynasync, write_config
from local import pending_changes
from pyinstrument import Profiler

from dynasync import config, syncpass
from dynasync.app import App


def main(n: int = 30_000) -> None:
    ddb = DynamoDBLocal()
    try:
        tmp = Path(tempfile.mkdtemp())
        db = tmp / "profile.db"
        make_db(db, n)
        cfg = write_config(tmp / "profile.toml", db, ddb.endpoint, new_table(ddb.endpoint))
        run_dynasync("init", "--config", str(cfg))
        pending_changes(db, n)
        app = App(config.load(cfg))
        profiler = Profiler()
        profiler.start()
        started = time.perf_counter()
        result = syncpass.sync(app)
        elapsed = time.perf_counter() - started
        profiler.stop()
        print(f"sync: {result.entries} changes in {elapsed:.2f}s = {result.entries / elapsed:,.0f}/s")
        print(profiler.output_text(unicode=False, color=False))
    finally:
        ddb.stop()


if __name__ == "__main__":
    main()

"""Demo: a sample shop database kept in sync with a local DynamoDB; one table's
oversized rows go through a local S3 (moto's standalone server)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from ddblocal import DynamoDBLocal  # noqa: E402
from s3local import S3Local  # noqa: E402

import dynasync  # noqa: E402

DYNASYNC = [str(ROOT / ".venv" / "bin" / "dynasync")]
BUCKET = "demo-documents"
MB = 1024 * 1024


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def cli(*args: str, config: Path) -> None:
    print(f"$ dynasync {' '.join(args)}", flush=True)
    subprocess.run([*DYNASYNC, *args, "--config", str(config)], check=True)


def wait_for(client: object, table: str, predicate: object, timeout: float = 15.0) -> tuple[list, float]:
    start = time.monotonic()
    while True:
        items = client.scan(TableName=table, ConsistentRead=True)["Items"]  # type: ignore[attr-defined]
        if predicate(items):  # type: ignore[operator]
            return items, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise SystemExit(f"demo: DynamoDB did not catch up within {timeout}s")
        time.sleep(0.02)


def show(items: list) -> None:
    for it in sorted(items, key=lambda i: int(i["id"]["N"])):
        fields = ", ".join(f"{k}={next(iter(v.values()))}" for k, v in sorted(it.items()))
        print(f"   {fields}")


def make_database(work: Path) -> sqlite3.Connection:
    db = work / "shop.db"
    step(f"sample application database {db}")
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE)")
    app.executemany(
        "INSERT INTO customers (id, name, email) VALUES (?, ?, ?)",
        [(1, "Ada", "ada@example.com"), (2, "Grace", "grace@example.com"), (3, "Linus", None)],
    )
    print("   3 customers")
    app.execute("CREATE TABLE documents (id INTEGER PRIMARY KEY, title TEXT NOT NULL, body TEXT)")
    app.execute("INSERT INTO documents VALUES (1, 'readme', 'a small document')")
    print("   1 document (table documents: oversize = \"s3\")")
    return app


def write_config(work: Path, endpoint: str, s3_endpoint: str) -> Path:
    config = work / "dynasync.toml"
    config.write_text(
        f'[source]\ndatabase = "{work / "shop.db"}"\n\n[dynamodb]\nendpoint_url = "{endpoint}"\n'
        'region = "us-east-1"\ncreate_tables = true\n\n[sync]\ninterval = 5.0\nwatch = true\n\n'
        f'[s3]\nbucket = "{BUCKET}"\nendpoint_url = "{s3_endpoint}"\n\n'
        '[[tables]]\nsource = "customers"\ntarget = "demo-customers"\n\n'
        '[[tables]]\nsource = "documents"\ntarget = "demo-documents"\noversize = "s3"\n'
    )
    return config


def live_changes(app: sqlite3.Connection, client: Any) -> None:
    step("the application inserts a customer")
    app.execute("INSERT INTO customers (id, name, email) VALUES (4, 'Margaret', 'mh@example.com')")
    items, lag = wait_for(client, "demo-customers", lambda i: len(i) == 4)
    print(f"   appeared in DynamoDB after {lag * 1000:.0f} ms")
    show(items)

    step("the application updates one customer and deletes another")
    app.execute("UPDATE customers SET name = 'Ada Lovelace' WHERE id = 1")
    app.execute("DELETE FROM customers WHERE id = 3")
    items, lag = wait_for(
        client,
        "demo-customers",
        lambda i: len(i) == 3 and any(x["name"]["S"] == "Ada Lovelace" for x in i),
    )
    print(f"   DynamoDB caught up after {lag * 1000:.0f} ms")
    show(items)

    step("a burst: 500 inserts in one transaction")
    app.execute("BEGIN")
    app.executemany(
        "INSERT INTO customers (id, name) VALUES (?, ?)", [(i, f"bulk-{i}") for i in range(100, 600)]
    )
    app.execute("COMMIT")
    _, lag = wait_for(client, "demo-customers", lambda i: len(i) == 503)
    print(f"   503 items in DynamoDB after {lag * 1000:.0f} ms")


def large_row(app: sqlite3.Connection, client: Any, s3: Any) -> None:
    step("a 1 MB document: over DynamoDB's 400 KB, so its body goes to S3 (oversize = \"s3\")")
    line = "All work and no play makes a row too big for one DynamoDB item.\n"
    body = (line * (MB // len(line) + 1))[:MB]
    app.execute("INSERT INTO documents (id, title, body) VALUES (2, 'manual', ?)", (body,))
    items, lag = wait_for(client, "demo-documents", lambda i: len(i) == 2)
    print(f"   appeared in DynamoDB after {lag * 1000:.0f} ms")
    item = next(i for i in items if i["id"]["N"] == "2")
    pointer = item["_dynasync"]["M"]["s3"]["M"]
    print(f"   its item: id={item['id']['N']}, title={item['title']['S']}, and the pointer _dynasync.s3:")
    for name in ("bucket", "key", "size", "sha256", "attributes"):
        print(f"     {name} = {next(iter(pointer[name].values()))}")
    for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]:
        print(f"   in S3: s3://{BUCKET}/{o['Key']} ({o['Size']:,} bytes)")

    def fetch(bucket: str, key: str) -> bytes:
        data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    decoded = dynasync.decode_item(item, fetch=fetch)
    print(f"   dynasync.decode_item(item): body of {len(decoded['body']['S']):,} characters, "
          f"equal to the row's: {decoded['body']['S'] == body}")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="dynasync-demo-"))
    step("starting DynamoDB Local on 127.0.0.1")
    server = DynamoDBLocal()
    print(f"   {server.endpoint}")
    os.environ.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo", AWS_DEFAULT_REGION="us-east-1")
    client = boto3.client("dynamodb", endpoint_url=server.endpoint, region_name="us-east-1")
    daemon = None
    objects = None
    try:
        step("starting moto's S3 server on 127.0.0.1 (table documents uses oversize = \"s3\")")
        objects = S3Local()
        print(f"   {objects.endpoint}, bucket {BUCKET}")
        s3 = boto3.client("s3", endpoint_url=objects.endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        app = make_database(work)
        config = write_config(work, server.endpoint, objects.endpoint)
        step("install capture and copy the existing rows")
        cli("init", config=config)
        cli("backfill", config=config)
        show(client.scan(TableName="demo-customers")["Items"])

        step("start the daemon: dynasync run")
        daemon = subprocess.Popen([*DYNASYNC, "run", "--config", str(config)])
        time.sleep(1.5)
        live_changes(app, client)
        large_row(app, client, s3)

        step("status and verify")
        cli("status", config=config)
        cli("verify", config=config)
    finally:
        if daemon is not None:
            step("stop the daemon (SIGTERM)")
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            print(f"   daemon exited with {daemon.returncode}")
        if objects is not None:
            objects.stop()
        server.stop()
    print(f"\ndemo finished; files are in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Stress test for the emulator's DynamoDB under concurrent writes (the project's issue 10).

Starts a fresh emulator on a free port — local/moto_server.py, or with --plain moto's own
`moto_server` — and fires TransactWriteItems, PutItem and UpdateItem at one table from many
threads, as concurrent onboardings do. Prints how many calls got HTTP 500 and how many counter
increments were lost, and exits 1 if either is not zero.

    .venv/bin/python local/check_emulator_concurrency.py            # expect 0 and 0
    .venv/bin/python local/check_emulator_concurrency.py --plain    # shows moto's race

Retries are off so every 500 is counted rather than hidden by the SDK.
"""

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from emulator_setup import wait_until_up  # beside this script, so on sys.path when it runs

LOCAL = Path(__file__).resolve().parent
VENV_BIN = LOCAL.parent / ".venv" / "bin"


class Tally:
    """Counts shared by the worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.server_errors = 0
        self.increments = 0  # increments of the counter item whose call succeeded

    def add(self, *, server_errors: int = 0, increments: int = 0) -> None:
        with self.lock:
            self.server_errors += server_errors
            self.increments += increments


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client(base: str) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=base,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=64),
    )


def counter_update(table: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "Key": {"pk": {"S": "counter"}},
        "UpdateExpression": "ADD n :one",
        "ExpressionAttributeValues": {":one": {"N": "1"}},
    }


def one_call(dynamodb: Any, table: str, i: int, tally: Tally) -> None:
    """One of four kinds of write, chosen by i; a cancelled transaction is the point of the last
    kind (moto then restores its copy of the table), not an error."""
    kind = i % 4
    try:
        if kind == 0:
            dynamodb.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": table, "Item": {"pk": {"S": f"tx-{i}"}}}},
                    {"Update": counter_update(table)},
                ]
            )
            tally.add(increments=1)
        elif kind == 1:
            dynamodb.put_item(TableName=table, Item={"pk": {"S": f"put-{i}"}})
        elif kind == 2:
            dynamodb.update_item(**counter_update(table))
            tally.add(increments=1)
        else:
            dynamodb.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": table, "Item": {"pk": {"S": f"cancelled-{i}"}}}},
                    {
                        "ConditionCheck": {
                            "TableName": table,
                            "Key": {"pk": {"S": "counter"}},
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
    except ClientError as error:
        status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        if status >= 500:
            tally.add(server_errors=1)
        elif error.response["Error"]["Code"] != "TransactionCanceledException":
            raise


def stress(base: str, threads: int, calls: int) -> tuple[Tally, int]:
    dynamodb = client(base)
    table = f"concurrency-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # The counter exists before the threads start, so every ConditionCheck on it fails.
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "counter"}, "n": {"N": "0"}})
    tally = Tally()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(one_call, dynamodb, table, i, tally) for i in range(calls)]:
            future.result()
    item = dynamodb.get_item(TableName=table, Key={"pk": {"S": "counter"}}, ConsistentRead=True)
    return tally, int(item["Item"]["n"]["N"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain", action="store_true", help="moto's own moto_server, no lock")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()

    port = free_port()
    if args.plain:
        command = [str(VENV_BIN / "moto_server")]
    else:
        command = [str(VENV_BIN / "python"), str(LOCAL / "moto_server.py")]
    name = "plain moto_server" if args.plain else "local/moto_server.py"
    # The log tells which of moto's exceptions were behind the 500s.
    with tempfile.TemporaryFile() as log:
        emulator = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_up(base)
            tally, counter = stress(base, args.threads, args.calls)
        finally:
            emulator.terminate()
            emulator.wait()
        log.seek(0)
        races = log.read().count(b"RuntimeError: dictionary changed size during iteration")

    # A call answered 500 may still have applied its increment, so lost ones count only the
    # shortfall below the increments that were acknowledged.
    lost = max(tally.increments - counter, 0)
    print(f"{name}: {args.calls} calls from {args.threads} threads")
    print(f"  HTTP 5xx answers:          {tally.server_errors}")
    print(f"  of which moto's race:      {races} (\"dictionary changed size during iteration\")")
    print(f"  lost counter increments:   {lost} (counter {counter}, acknowledged {tally.increments})")
    sys.exit(1 if tally.server_errors or lost else 0)


if __name__ == "__main__":
    main()

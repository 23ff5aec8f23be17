"""moto's server mode (`moto_server -H HOST -p PORT`), made faithful to two
DynamoDB guarantees Sygno's tests rely on. Usage:
    python scripts/moto_server.py -H 127.0.0.1 -p PORT

1. Every request is atomic. moto serves requests on concurrent threads and
   applies a TransactWriteItems by snapshotting the table and restoring the
   snapshot when a condition fails; a restore racing another request
   erases what that request committed. One lock around each request
   serializes them (connections stay concurrent, HTTP/1.1 keep-alive).
2. A cancelled transaction writes nothing. moto applies the items after a
   failed condition anyway, then swaps in the snapshot: stream iterators
   opened before keep reading the discarded records, whose sequence numbers
   the stream later reuses. Conditions are checked first here, and a
   transaction that would fail is cancelled before anything is applied.
   A transaction of Puts that passes is then applied item by item: with
   requests serialized nothing can fail halfway, and moto's snapshot (a
   deep copy of the whole table and its stream, per transaction) would
   make every commit cost as much as the table is large.
"""

import threading

import moto.server as server
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import TransactionCanceledException
from moto.dynamodb.models import DynamoDBBackend

_lock = threading.Lock()
_Dispatcher = server.DomainDispatcherApplication


class SerializedDispatcher(_Dispatcher):
    def __call__(self, environ, start_response):
        with _lock:
            # Materialize the body inside the lock: a lazy iterable would
            # run the request's work after the lock is released.
            return list(super().__call__(environ, start_response))


_transact_write_items = DynamoDBBackend.transact_write_items


def _checked_transact_write_items(self, transact_items):
    reasons = []
    for entry in transact_items:
        _, op = next(iter(entry.items()))
        condition = op.get("ConditionExpression")
        if condition is None or op.get("TableName") not in self.tables:
            reasons.append((None, None, None))
            continue
        table = self.get_table(op["TableName"])
        if "Item" in op:
            key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = op["Item"][table.range_key_attr]
        else:
            key = op["Key"]
        current = self.get_item(op["TableName"], key)
        check = get_filter_expression(
            condition,
            op.get("ExpressionAttributeNames"),
            op.get("ExpressionAttributeValues"),
        )
        if check.expr(current):
            reasons.append((None, None, None))
        else:
            reasons.append(("ConditionalCheckFailed", "The conditional request failed", None))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    ops = [next(iter(entry.items())) for entry in transact_items]
    if len(ops) > 100 or any(kind != "Put" for kind, _ in ops):
        return _transact_write_items(self, transact_items)
    for _, op in ops:
        self.put_item(op["TableName"], op["Item"])


server.DomainDispatcherApplication = SerializedDispatcher
DynamoDBBackend.transact_write_items = _checked_transact_write_items

if __name__ == "__main__":
    server.main()

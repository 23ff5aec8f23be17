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
3. Size limits, as DynamoDB enforces them (moto checks only some paths):
   an item is at most 400 KB (attribute names plus values, "Item sizes" in
   the developer guide; see ITEM_LIMIT); a PutItem of a larger one is a
   ValidationException, and a TransactWriteItems holding one is cancelled
   whole with the reason ValidationError for that item; the items of one
   transaction add up to at most 4 MB, else a ValidationException and
   nothing is written.

And one fault DynamoDB can show that moto cannot: a write that succeeded
but whose response was lost (a 500 after the item is stored; the SDK then
retries it). `POST /_sygno/lose-response` with a text as its body (an
event id) arms it: the next PutItem whose request carries that text as a
JSON string is applied and answered with an InternalServerError.

And a write DynamoDB refuses for a while (a hot partition's throttling):
`POST /_sygno/refuse-puts` with a text arms it: every PutItem whose
request carries that text (as a JSON string or inside one) is refused
with ProvisionedThroughputExceededException, nothing stored, until
`POST /_sygno/clear-faults`.
"""

import io
import json
import threading

import moto.server as server
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import MockValidationException, TransactionCanceledException
from moto.dynamodb.models import DynamoDBBackend

_lock = threading.Lock()
_Dispatcher = server.DomainDispatcherApplication


_lose_response_of = []  # texts whose next PutItem's response is lost
_refuse_puts_of = []  # texts whose PutItems are refused (throttled)


def _answer(start_response, status, text):
    start_response(status, [("Content-Type", "text/plain")])
    return [text]


class SerializedDispatcher(_Dispatcher):
    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_sygno/lose-response":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            with _lock:
                _lose_response_of.append(environ["wsgi.input"].read(size).decode())
            return _answer(start_response, "200 OK", b"armed")
        if environ.get("PATH_INFO") == "/_sygno/refuse-puts":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            with _lock:
                _refuse_puts_of.append(environ["wsgi.input"].read(size).decode())
            return _answer(start_response, "200 OK", b"armed")
        if environ.get("PATH_INFO") == "/_sygno/clear-faults":
            with _lock:
                _lose_response_of.clear()
                _refuse_puts_of.clear()
            return _answer(start_response, "200 OK", b"cleared")
        lost = None
        is_put = environ.get("HTTP_X_AMZ_TARGET", "").endswith(".PutItem")
        if is_put and (_lose_response_of or _refuse_puts_of):
            size = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(size)
            environ["wsgi.input"] = io.BytesIO(body)
            text = body.decode(errors="replace")
            if any(json.dumps(t)[1:-1] in text for t in list(_refuse_puts_of)):
                start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.0")])
                error = {"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                         "message": "throughput exceeded (test fault)"}
                return [json.dumps(error).encode()]
            lost = next((sk for sk in _lose_response_of if json.dumps(sk) in text), None)
        with _lock:
            # Materialize the body inside the lock: a lazy iterable would
            # run the request's work after the lock is released.
            answer = list(super().__call__(environ, lambda *args: None if lost else start_response(*args)))
            if lost is None:
                return answer
            _lose_response_of.remove(lost)
        start_response("500 Internal Server Error", [("Content-Type", "application/x-amz-json-1.0")])
        error = {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                 "message": "response lost (test fault)"}
        return [json.dumps(error).encode()]


# DynamoDB takes items up to 400 KB (409,600 bytes); moto itself refuses
# some writes from 405,000 bytes on. The stricter of the two, so that a
# transaction the checks below pass cannot fail halfway inside moto.
ITEM_LIMIT = 405_000
TRANSACTION_LIMIT = 4 * 1024 * 1024


def value_size(value):
    """Bytes DynamoDB counts for one attribute value in its JSON form."""
    (kind, inner), = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").lstrip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        # Base64 text as sent, or bytes where moto decoded it already.
        return len(inner) if isinstance(inner, bytes) else len(inner) * 3 // 4
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in inner.items())
    if kind in ("SS", "NS", "BS"):
        return sum(value_size({kind[0]: v}) for v in inner)
    return 0


def item_size(attrs):
    return sum(len(name.encode()) + value_size(v) for name, v in attrs.items())


def too_large():
    return MockValidationException("Item size has exceeded the maximum allowed size")


_put_item = DynamoDBBackend.put_item


def _checked_put_item(self, table_name, item_attrs, *args, **kwargs):
    if item_size(item_attrs) > ITEM_LIMIT:
        raise too_large()
    return _put_item(self, table_name, item_attrs, *args, **kwargs)


_transact_write_items = DynamoDBBackend.transact_write_items


def _checked_transact_write_items(self, transact_items):
    sizes = [item_size(next(iter(e.values())).get("Item", {})) for e in transact_items]
    if sum(sizes) > TRANSACTION_LIMIT:
        raise MockValidationException(
            "Transaction request cannot be larger than 4 MB"
        )
    if any(size > ITEM_LIMIT for size in sizes):
        raise TransactionCanceledException(
            [
                ("ValidationError", "Item size has exceeded the maximum allowed size", None)
                if size > ITEM_LIMIT
                else (None, None, None)
                for size in sizes
            ]
        )
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
        _put_item(self, op["TableName"], op["Item"])


server.DomainDispatcherApplication = SerializedDispatcher
DynamoDBBackend.transact_write_items = _checked_transact_write_items
DynamoDBBackend.put_item = _checked_put_item

if __name__ == "__main__":
    server.main()

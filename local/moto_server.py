"""Starts moto's server exactly as `moto_server` does (same options: -H HOST -p PORT …), with
the requests of DynamoDB, of Secrets Manager and of ECS, each dispatched one at a time, and one read
of moto's own state added: the e-mails SES has sent.

Why: moto's backends are not thread-safe, and its server answers each request on its own thread.
TransactWriteItems deep-copies every table it touches (its rollback copy) while another thread
may be adding an item to that table, which fails with "dictionary changed size during iteration"
(HTTP 500); the rollback would also put back the copy over a write made meanwhile. Secrets
Manager's GetSecretValue walks the secrets while a CreateSecret adds one, with the same 500 (seen
in `make test`), and ECS's DescribeTasks walks the tasks while a RunTask adds one (seen in
`make bench`'s 200 concurrent onboardings). AWS has none of these problems, so the fix belongs to
the emulator, not the platform.

Each service has a lock of its own, so one never waits for another; SQS has none, since a long
poll holds its request for up to 20 s and a SendMessage must not wait behind it.

Sent e-mails: moto keeps every message SES (v1 or v2) sends in its SES backend's
`sent_messages` (the way its docs say to check a send), but its server shows them only through
`/moto-api/data.json`, which serialises every model instance of every service (every DynamoDB
item ever written, on the shared emulator) while other threads change them. So
`GET /moto-api/dotmac/ses/sent?to=ADDRESS` answers just the messages to ADDRESS, as JSON
`[{"id","source","subject","body","destinations"}]`, oldest first: what the tests read an
invitation's link from (a person uses the link `make dev` prints).
"""

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import moto.server
from flask import Flask, jsonify, request

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# moto's names for its Flask apps (see moto/moto_server/werkzeug_app.py,
# infer_service_region_host) and the lock each one's requests take. DynamoDB's three apps share
# one, since they all read the same tables (streams included).
_dynamodb_lock = threading.Lock()
LOCKS: dict[str, threading.Lock] = {
    "dynamodb": _dynamodb_lock,
    "dynamodb_v20111205": _dynamodb_lock,
    "dynamodbstreams": _dynamodb_lock,
    "secretsmanager": threading.Lock(),
    # moto's ECS iterates its task maps while RunTask adds to them ("dictionary changed size
    # during iteration" in DescribeTasks, seen under 200 concurrent onboardings).
    "ecs": threading.Lock(),
}


def _serialised(wsgi_app: WsgiApp, lock: threading.Lock) -> WsgiApp:
    # moto answers with a body it has already built, so the whole backend call happens inside
    # wsgi_app: holding the lock for that call covers every read and write of its state.
    def locked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            return wsgi_app(environ, start_response)

    return locked


SENT_MESSAGES_PATH = "/moto-api/dotmac/ses/sent"


def _sent_messages() -> Any:
    from moto.ses.models import ses_backends

    wanted = request.args.get("to", "").strip().lower()
    found = []
    # Copies of the containers: other threads may be adding to them as this reads.
    for regions in list(ses_backends.values()):
        for backend in list(regions.values()):
            for message in list(backend.sent_messages):
                destinations = getattr(message, "destinations", {})
                addresses = destinations.values() if isinstance(destinations, dict) else [destinations]
                recipients = [a.lower() for group in addresses for a in group]
                if wanted and wanted not in recipients:
                    continue
                found.append(
                    {
                        "id": getattr(message, "id", None),
                        "source": message.source,
                        "subject": getattr(message, "subject", None),
                        "body": getattr(message, "body", getattr(message, "raw_data", None)),
                        "destinations": destinations,
                    }
                )
    return jsonify(found)


def main() -> None:
    # moto.server.main builds its dispatcher from this module-level name when it runs, so
    # replacing it here wraps each backend's app as moto creates it (once, on first use).
    create_backend_app = moto.server.create_backend_app

    def create_app(service: Any) -> Flask:
        app = create_backend_app(service)
        if service == "moto_api":
            app.add_url_rule(SENT_MESSAGES_PATH, "dotmac_ses_sent", _sent_messages, methods=["GET"])
        if service in LOCKS:
            app.wsgi_app = _serialised(app.wsgi_app, LOCKS[service])  # type: ignore[method-assign]
        return app

    moto.server.create_backend_app = create_app  # type: ignore[assignment]
    moto.server.main(sys.argv[1:])


if __name__ == "__main__":
    main()

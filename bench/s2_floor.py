"""S2's floors: the least a send recorded before its answer can cost in this stack, served
as S2 serves the app (gunicorn with deploy/gunicorn.conf.py, 5 sync workers, Flask,
psycopg2) so their rates against /ping in the same run bound S2's ratios from above.

`POST /sendsms` reads the JSON body and inserts one sendlog row with one statement that
commits (the durability a `202` promises), then answers JSON. `POST /sendsms/answered` is
the synchronous answer's floor: the same INSERT, then the provider's answer recorded on
that row by a second statement that commits, the two commits a synchronous send needs (the
send recorded before it goes to the provider, then what the provider said). Neither does
validation, numbers, ids, batches, suppression list, request log line or dispatch, which
every real send needs.
"""

import os

import psycopg2
from flask import Flask, jsonify, request

app = Flask(__name__)
_connection = None  # this worker's: opened after the fork, on first use


def connection():
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg2.connect(os.environ["MESSAGING_DATABASE_URL"])
        _connection.autocommit = True
    return _connection


@app.get("/ping")
def ping():
    return jsonify({"Timestamp": 0})


def recorded(body: dict) -> int:
    """The send's sendlog id, its row committed."""
    with connection().cursor() as cur:
        cur.execute(
            "INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed, sent,"
            " accepted, message, status, description)"
            " VALUES (now(), '', 'sms', %s, 0, 0, 0, 0, %s, 'sending', '') RETURNING id",
            (len(body["msisdns"]), body["message"]),
        )
        return cur.fetchone()[0]


@app.post("/sendsms")
def send_sms():
    body = request.get_json(force=True)
    ref = recorded(body)
    return jsonify({"refNumber": str(ref), "validNumbers": len(body["msisdns"])}), 202


@app.post("/sendsms/answered")
def send_sms_answered():
    body = request.get_json(force=True)
    ref = recorded(body)
    sent = len(body["msisdns"])
    with connection().cursor() as cur:
        cur.execute(
            "UPDATE sendlog SET sent = %s, accepted = %s, status = 'success' WHERE id = %s",
            (sent, sent, ref),
        )
    return jsonify({"refNumber": str(ref), "messagesSent": sent, "success": True})

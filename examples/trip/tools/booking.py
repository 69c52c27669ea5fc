"""Booking tools for the trip example.

A command tool reads its arguments as one JSON object on stdin and prints its result on stdout;
a failure is a non-zero exit status with the reason on stderr. AgentHelm passes an idempotency
key in AGENTHELM_IDEMPOTENCY_KEY: the booking id is derived from it, so running the same call
again (a retry, a resumed run) does not book twice.
"""
import hashlib
import json
import os
import pathlib
import sys
import time

BOOKINGS = pathlib.Path("bookings")
CARD_LIMIT = 2000


def reserve(kind, args):
    key = os.environ.get("AGENTHELM_IDEMPOTENCY_KEY", "")
    booking_id = f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    time.sleep(0.3)  # a real booking service takes a moment
    BOOKINGS.mkdir(exist_ok=True)
    (BOOKINGS / f"{booking_id}.json").write_text(json.dumps({"kind": kind, **args}))
    return {"id": booking_id, "kind": kind, "price": args["price"]}


def charge(args):
    amount = args["amount"]
    if amount > CARD_LIMIT:
        sys.exit(f"card declined: {amount:.2f} exceeds the card limit of {CARD_LIMIT:.2f}")
    return {"charged": amount}


def cancel(args):
    (BOOKINGS / f"{pathlib.Path(args['id']).name}.json").unlink(missing_ok=True)
    return {"cancelled": args["id"]}


def main():
    args = json.load(sys.stdin)
    action = sys.argv[1]
    if action == "reserve":
        result = reserve(sys.argv[2], args)
    elif action == "charge":
        result = charge(args)
    elif action == "cancel":
        result = cancel(args)
    else:
        sys.exit(f"unknown action {action!r}")
    print(json.dumps(result))


main()

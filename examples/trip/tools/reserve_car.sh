#!/bin/sh
# Reserve a rental car. Arguments arrive as JSON on stdin; the result goes to stdout.
# The booking id comes from the idempotency key, so a repeated call books nothing new.
set -eu
input=$(cat)
id="car-$(printf '%s' "${AGENTHELM_IDEMPOTENCY_KEY:-}" | cksum | cut -d ' ' -f 1)"
sleep 0.3
mkdir -p bookings
printf '%s\n' "$input" > "bookings/$id.json"
printf '{"id": "%s", "kind": "car"}\n' "$id"

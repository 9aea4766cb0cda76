#!/bin/sh
# keepalived track script for pcoip-lb (docs/ha.md): exit 0 when the instance can place new
# clients. Asks the admin server's GET /readyz; an older pcoip-lb without /readyz (404) is asked
# GET /healthz instead (the same meaning: 200 while a Connector takes new clients, else 503).
# Usage: check-pcoip-lb.sh [ADMIN_URL]   (default: http://127.0.0.1:8404)
# Both probes are open endpoints: no token is needed even when the admin API has one.
set -u
url="${1:-http://127.0.0.1:8404}"
code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url/readyz") || exit 1
if [ "$code" = "404" ]; then
  code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url/healthz") || exit 1
fi
[ "$code" = "200" ]

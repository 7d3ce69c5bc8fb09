#!/usr/bin/env python3
"""Latency of the seed flow's three requests against a running server.

Sequential requests over one keep-alive connection, so the figures are
per-request service time, not throughput. Usage:

    agentauth serve --demo --data-dir "$(mktemp -d)" &
    python3 scripts/seed_latency.py -n 300 [--url http://127.0.0.1:8080]
"""

import argparse
import http.client
import json
import statistics
import time
import urllib.parse

REGISTRATION = {
    "grant_types": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
    "client_name": "software agent",
    "response_types": ["token"],
    "redirect_uris": ["https://www.example.com:443/callback"],
    "scopes": ["read", "write"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="iterations of the whole flow")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--realm", default="alpha")
    args = parser.parse_args()

    url = urllib.parse.urlsplit(args.url)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80)
    realm = f"/am/oauth2/realms/root/realms/{args.realm}"

    def post(path, body, content_type):
        started = time.perf_counter()
        conn.request("POST", realm + path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        if response.status not in (200, 201):
            raise SystemExit(f"{path}: {response.status} {payload[:300]!r}")
        return json.loads(payload), elapsed

    form = "application/x-www-form-urlencoded"
    timings = {"register": [], "client_credentials": [], "token_exchange": []}
    for _ in range(args.n):
        client, t = post("/aiagent/register", json.dumps(REGISTRATION), "application/json")
        timings["register"].append(t)
        creds = {"client_id": client["client_id"], "client_secret": client["client_secret"]}
        token, t = post("/access_token", urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "read", **creds}), form)
        timings["client_credentials"].append(t)
        exchange = {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "scope": "read write",
            "subject_token": token["access_token"],
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            **creds,
        }
        _, t = post("/access_token", urllib.parse.urlencode(exchange), form)
        timings["token_exchange"].append(t)

    print(f"{'request':<20} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in timings.items():
        values.sort()
        p50 = statistics.median(values) * 1000
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1000
        print(f"{name:<20} {len(values):>5} {p50:>8.2f} {p99:>8.2f}")


if __name__ == "__main__":
    main()

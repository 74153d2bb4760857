"""A keep-alive HTTP client as scripts and importers are: Python's http.client on one connection,
sending each request whole (head and body) before reading its answer, and reconnecting only when an
answer said `Connection: close` (http.client does that by itself).

Reads a JSON list of requests on stdin: {"method", "path", "headers": {..}, "body": "text",
"repeat": n (the body text repeated), "chunked": bool}. Prints one JSON line per request:
{"status": 413, "close": true, "body": "..."} or {"error": "BrokenPipeError: ..."}, then a
last line {"connections": n}. With TG_TLS_CA set, speaks HTTPS (HTTP/1.1) trusting that CA.
"""

import http.client
import json
import os
import ssl
import sys


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    plan = json.load(sys.stdin)
    ca = os.environ.get("TG_TLS_CA")
    connections = 0

    def connect():
        nonlocal connections
        connections += 1
        if ca:
            ctx = ssl.create_default_context(cafile=ca)
            return http.client.HTTPSConnection(host, port, timeout=20, context=ctx)
        return http.client.HTTPConnection(host, port, timeout=20)

    conn = connect()
    for req in plan:
        body = req.get("body", "") * req.get("repeat", 1)
        data = body.encode()
        headers = dict(req.get("headers", {}))
        chunked = req.get("chunked", False)
        try:
            if chunked:
                pieces = [data[i:i + 8192] for i in range(0, len(data), 8192)]
                conn.request(req["method"], req["path"], body=iter(pieces),
                             headers=headers, encode_chunked=True)
            else:
                conn.request(req["method"], req["path"], body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
            close = (resp.getheader("connection") or "").lower() == "close"
            print(json.dumps({"status": resp.status, "close": close, "body": text[:300]}))
            if close:
                # What http.client would do on its next request anyway, counted.
                conn.close()
                conn = connect()
        except Exception as e:  # a broken pipe, a reset, a timeout: what the test must never see
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
            conn.close()
            conn = connect()
        sys.stdout.flush()
    print(json.dumps({"connections": connections}))


main()

#!/usr/bin/env python3
"""A webhook receiver for the demo: checks each request's HMAC-SHA256
signature (X-Cofferdam-Signature: t=UNIX,v1=HEX over "UNIX." + body) with the
secret in OPS_WEBHOOK_SECRET, refuses requests older than five minutes,
de-duplicates by event id, and appends one line per event to a log file.

usage: webhook_receiver.py PORT LOGFILE
"""
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["OPS_WEBHOOK_SECRET"].encode()
PORT, LOG = int(sys.argv[1]), sys.argv[2]
seen = set()


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        fields = dict(p.split("=", 1) for p in self.headers.get("X-Cofferdam-Signature", "").split(",") if "=" in p)
        expected = hmac.new(SECRET, f"{fields.get('t', '')}.".encode() + body, hashlib.sha256).hexdigest()
        fresh = abs(time.time() - int(fields.get("t", "0"))) < 300
        if not (hmac.compare_digest(expected, fields.get("v1", "")) and fresh):
            self.send_response(401)
            self.end_headers()
            return
        event = json.loads(body)
        if event["id"] not in seen:
            seen.add(event["id"])
            summary = {k: event.get(k) for k in ("type", "schedule", "status", "tokens", "cost", "output")}
            with open(LOG, "a") as log:
                log.write(f"signature ok  {json.dumps(summary)}\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Hook).serve_forever()

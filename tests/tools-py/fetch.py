"""Fetches a URL through wasi:http and maps the status like the Rust SDK.

Used to check the HTTP client end to end against a loopback server the
test starts (the tool's manifest must allow its origin and 127.0.0.0/8).
"""

from dataclasses import dataclass

from cofferdam_guest import http, tool


@dataclass
class Input:
    url: str
    check_status: bool = True
    """Raise the mapped error for a 4xx/5xx status instead of returning it."""


@dataclass
class Output:
    status: int
    content_type: str
    body: str


@tool
def fetch(input: Input) -> Output:
    """Fetches a URL and returns its status and body."""
    response = http.get(input.url, headers={"accept": "text/plain"})
    if input.check_status:
        response.error_for_status()
    return Output(response.status, response.header("content-type") or "", response.text()[:2000])

"""A small, blocking HTTP client for tools, over `wasi:http`.

```python
from cofferdam_guest import http

forecast = (
    http.get("https://api.weather.example/v1/forecast", query={"city": "Lisbon"})
    .error_for_status()   # 429 -> RateLimited, 408/502/503/504 -> Transient, ...
    .json()
)
```

Importing this module is what puts `wasi:http/outgoing-handler` in the
component's imports: `cofferdam-py build` sees the import and targets the
world `tool` plus that interface. Import it at the top of the tool's
module: a component cannot import modules after it is built.

The host decides what may be reached: a request to an origin the tool's
policy does not allow, or to a private address, fails with `Refused`
before any connection is made. Redirects are returned, not followed.
The errors are `ToolError`s already, with the Rust SDK's mapping
(`guest-sdk/src/http.rs`): `Unavailable` is transient, `Refused`,
`InvalidUrl` and `HttpFailure` permanent.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional
from urllib.parse import quote

from .errors import InvalidInput, Permanent, RateLimited, Transient
from .output import to_json_text

try:  # present only inside a component built with wasi:http
    from componentize_py_types import Err as _Err
    from wit_world.imports import http_types as _h
    from wit_world.imports import outgoing_handler as _outgoing
    from wit_world.imports import streams as _streams
except ImportError:  # on the build machine, or in unit tests
    _Err = None  # type: ignore[assignment,misc]
    _h = None
    _outgoing = None
    _streams = None

__all__ = [
    "Request",
    "Response",
    "HttpError",
    "InvalidUrl",
    "Refused",
    "Unavailable",
    "HttpFailure",
    "request",
    "get",
    "post",
    "status_error",
]

_CHUNK = 4096
_READ = 64 << 10


class HttpError(Exception):
    """A request that did not produce a response."""


class InvalidUrl(HttpError, Permanent):
    """The URL could not be parsed (`scheme://host[:port]/path`)."""

    def __init__(self, message: str) -> None:
        Permanent.__init__(self, f"invalid URL: {message}")


class Refused(HttpError, Permanent):
    """The host's policy refused the request (origin not allowed, private
    address, too many requests); no connection was made."""

    def __init__(self, message: str) -> None:
        Permanent.__init__(self, f"refused by the host's network policy: {message}")


class Unavailable(HttpError, Transient):
    """The upstream could not be reached or did not answer in time."""

    def __init__(self, message: str) -> None:
        Transient.__init__(self, f"upstream unavailable: {message}")


class HttpFailure(HttpError, Permanent):
    """Anything else the host reported."""

    def __init__(self, message: str) -> None:
        Permanent.__init__(self, f"HTTP request failed: {message}")


def status_error(status: int, url: str, retry_after: Optional[str]) -> Optional[Exception]:
    """The `ToolError` for an unsuccessful status, or `None` for 1xx-3xx.

    | status | error |
    |---|---|
    | 2xx, 3xx | none |
    | 429 | `RateLimited` with `Retry-After` (seconds, default 1 s) |
    | 408, 502, 503, 504 | `Transient` |
    | 400, 404, 422 | `InvalidInput`: the request built from the input was rejected |
    | other 4xx and 5xx | `Permanent` |
    """
    what = f"{url} answered {status}"
    if status < 400:
        return None
    if status == 429:
        try:
            seconds = int((retry_after or "").strip())
        except ValueError:
            seconds = 1
        return RateLimited(max(seconds, 0) * 1000)
    if status in (408, 502, 503, 504):
        return Transient(what)
    if status in (400, 404, 422):
        return InvalidInput(what)
    return Permanent(what)


@dataclass
class Response:
    """A response: status, headers (names lowercase) and the whole body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    url: str

    def header(self, name: str) -> Optional[str]:
        """A header's value, by case-insensitive name."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def text(self) -> str:
        """The body as text (invalid UTF-8 replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; a body that does not parse is `Permanent`."""
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise Permanent(f"{self.url}: response is not the expected JSON: {e}") from None

    def error_for_status(self) -> "Response":
        """Raises the `ToolError` for an unsuccessful status (see `status_error`)."""
        error = status_error(self.status, self.url, self.header("retry-after"))
        if error is not None:
            raise error
        return self


@dataclass
class Request:
    """An HTTP request to build and send."""

    method: str
    url: str
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def full_url(self) -> str:
        """The URL with the query parameters percent-encoded and appended."""
        if not self.query:
            return self.url
        sep = "&" if "?" in self.url else "?"
        pairs = "&".join(f"{quote(k, safe='-._~')}={quote(v, safe='-._~')}" for k, v in self.query)
        return f"{self.url}{sep}{pairs}"

    def send(self) -> Response:
        """Sends the request and reads the whole response."""
        if _h is None:
            raise HttpFailure(
                "wasi:http is not available: import cofferdam_guest.http at the top of the "
                "tool's module and build it with cofferdam-py build"
            )
        return _send(self)


def request(
    method: str,
    url: str,
    *,
    query: Optional[Mapping[str, str]] = None,
    headers: Optional[Mapping[str, str]] = None,
    body: bytes | str | None = None,
    json: Any = None,
) -> Response:
    """Sends one request and returns the response, whatever its status."""
    req = Request(method.upper(), url)
    for k, v in (query or {}).items():
        req.query.append((str(k), str(v)))
    for k, v in (headers or {}).items():
        req.headers.append((str(k).lower(), str(v)))
    if json is not None:
        req.headers.append(("content-type", "application/json"))
        req.body = to_json_text(json).encode("utf-8")
    elif body is not None:
        req.body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return req.send()


def get(url: str, **kwargs: Any) -> Response:
    """A GET request; keys as for `request`."""
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> Response:
    """A POST request; keys as for `request`."""
    return request("POST", url, **kwargs)


def _parse_url(url: str) -> tuple[str, str, str]:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise InvalidUrl(url)
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=-1)
    if cut < 0:
        authority, path = rest, "/"
    elif rest[cut] == "/":
        authority, path = rest[:cut], rest[cut:]
    else:
        authority, path = rest[:cut], "/" + rest[cut:]
    if not authority or "@" in authority:
        raise InvalidUrl(url)
    return scheme.lower(), authority, path


_METHODS = {
    "GET": "Method_Get",
    "HEAD": "Method_Head",
    "POST": "Method_Post",
    "PUT": "Method_Put",
    "DELETE": "Method_Delete",
    "PATCH": "Method_Patch",
    "OPTIONS": "Method_Options",
}

# Error codes that mean the upstream could not be reached or was too slow.
_UNAVAILABLE = {
    "DnsTimeout", "DnsError", "DestinationNotFound", "DestinationUnavailable",
    "DestinationIpUnroutable", "ConnectionRefused", "ConnectionTerminated",
    "ConnectionTimeout", "ConnectionReadTimeout", "ConnectionWriteTimeout",
    "ConnectionLimitReached", "HttpResponseTimeout", "HttpResponseIncomplete",
}
_REFUSED = {"HttpRequestDenied", "DestinationIpProhibited"}


def _describe(url: str, code: Any) -> HttpError:
    name = type(code).__name__.removeprefix("ErrorCode_")
    detail = getattr(code, "value", None)
    text = f"{url}: {name}" + (f" ({detail})" if detail is not None else "")
    if name in _REFUSED:
        return Refused(url)
    if name in _UNAVAILABLE:
        return Unavailable(text)
    return HttpFailure(text)


def _drop(*resources: Any) -> None:
    # Children before parents: the host refuses to drop a resource whose
    # child (a body's stream) is still alive.
    for r in resources:
        if r is not None:
            try:
                r.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - already dropped or consumed
                pass


def _send(req: Request) -> Response:
    url = req.full_url()
    scheme, authority, path = _parse_url(url)
    method_cls = _METHODS.get(req.method.upper())
    method = getattr(_h, method_cls)() if method_cls else _h.Method_Other(req.method)
    try:
        headers = _h.Fields.from_list([(k, v.encode("utf-8")) for k, v in req.headers])
    except _Err as e:
        raise HttpFailure(f"invalid header: {type(e.value).__name__}") from None
    outgoing = _h.OutgoingRequest(headers)
    for setter, value, what in (
        (outgoing.set_method, method, "method"),
        (outgoing.set_scheme, _h.Scheme_Https() if scheme == "https" else _h.Scheme_Http(), "scheme"),
        (outgoing.set_authority, authority, "authority"),
        (outgoing.set_path_with_query, path, "path"),
    ):
        try:
            setter(value)
        except _Err:
            _drop(outgoing)
            raise InvalidUrl(f"{what} rejected in {url}") from None
    body = outgoing.body()
    if req.body:
        stream = body.write()
        try:
            for i in range(0, len(req.body), _CHUNK):
                stream.blocking_write_and_flush(req.body[i : i + _CHUNK])
        except _Err as e:
            _drop(stream, body, outgoing)
            raise HttpFailure(f"writing the body: {e.value}") from None
        _drop(stream)
    try:
        _h.OutgoingBody.finish(body, None)
    except _Err as e:
        _drop(outgoing)
        raise _describe(url, e.value) from None
    try:
        future = _outgoing.handle(outgoing, None)
    except _Err as e:
        raise _describe(url, e.value) from None
    pollable = future.subscribe()
    pollable.block()
    _drop(pollable)
    got = future.get()
    _drop(future)
    if got is None or isinstance(got, _Err) or not hasattr(got, "value"):
        raise HttpFailure("response already taken")
    inner = got.value
    if isinstance(inner, _Err):
        raise _describe(url, inner.value)
    response = inner.value
    status = response.status()
    fields = response.headers()
    resp_headers = [(k.lower(), bytes(v).decode("utf-8", errors="replace")) for k, v in fields.entries()]
    _drop(fields)
    incoming = response.consume()
    stream = incoming.stream()
    chunks: list[bytes] = []
    try:
        while True:
            try:
                chunks.append(bytes(stream.blocking_read(_READ)))
            except _Err as e:
                if isinstance(e.value, _streams.StreamError_Closed):
                    break
                io_error = e.value.value
                code = _h.http_error_code(io_error)
                detail = io_error.to_debug_string()
                _drop(io_error)
                if code is not None:
                    raise _describe(url, code) from None
                # The host's body size limit has no error code of its own.
                if "body size exceeds limit" in detail:
                    raise HttpFailure(f"{url}: response body larger than the policy allows") from None
                raise Unavailable(f"{url}: reading the body failed: {detail}") from None
    finally:
        _drop(stream, incoming, response)
    return Response(status=status, headers=resp_headers, body=b"".join(chunks), url=url)

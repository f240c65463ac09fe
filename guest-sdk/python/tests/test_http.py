"""The HTTP client's pure parts: status → tool error (the Rust SDK's table),
URL splitting and query encoding. Sending needs a component."""

import unittest

from cofferdam_guest import InvalidInput, Permanent, RateLimited, Transient
from cofferdam_guest import http
from cofferdam_guest.http import Request, Response, _parse_url, status_error


def response(status: int, retry_after=None) -> Response:
    headers = [("retry-after", retry_after)] if retry_after is not None else []
    return Response(status=status, headers=headers, body=b'{"a":1}', url="https://api.example/x")


class StatusMappingTest(unittest.TestCase):
    def test_success_and_redirects_pass(self) -> None:
        for status in (200, 204, 301, 304):
            self.assertIsNone(status_error(status, "u", None))
            self.assertEqual(response(status).error_for_status().json(), {"a": 1})

    def test_429_is_rate_limited_with_retry_after_seconds(self) -> None:
        with self.assertRaises(RateLimited) as caught:
            response(429, "7").error_for_status()
        self.assertEqual(caught.exception.retry_after_ms, 7000)
        self.assertEqual(status_error(429, "u", None).retry_after_ms, 1000)
        self.assertEqual(status_error(429, "u", "Wed, 21 Oct 2015 07:28:00 GMT").retry_after_ms, 1000)

    def test_classes_match_the_rust_sdk(self) -> None:
        table = {
            408: Transient, 502: Transient, 503: Transient, 504: Transient,
            400: InvalidInput, 404: InvalidInput, 422: InvalidInput,
            401: Permanent, 403: Permanent, 409: Permanent, 500: Permanent, 501: Permanent,
        }
        for status, cls in table.items():
            with self.subTest(status):
                error = status_error(status, "https://api.example/x", None)
                self.assertIs(type(error), cls)
                self.assertEqual(str(error), f"https://api.example/x answered {status}")

    def test_connection_failures_are_transient_and_refusals_permanent(self) -> None:
        self.assertIsInstance(http.Unavailable("x"), Transient)
        self.assertIsInstance(http.Refused("x"), Permanent)
        self.assertIsInstance(http.InvalidUrl("x"), Permanent)
        self.assertIsInstance(http._describe("u", type("ErrorCode_ConnectionRefused", (), {})()), http.Unavailable)
        self.assertIsInstance(http._describe("u", type("ErrorCode_HttpRequestDenied", (), {})()), http.Refused)
        self.assertIsInstance(http._describe("u", type("ErrorCode_TlsCertificateError", (), {})()), http.HttpFailure)

    def test_bad_json_body_is_permanent(self) -> None:
        bad = Response(status=200, headers=[], body=b"<html>", url="u")
        with self.assertRaises(Permanent):
            bad.json()


class UrlTest(unittest.TestCase):
    def test_urls_split_into_scheme_authority_and_path(self) -> None:
        self.assertEqual(_parse_url("https://api.example.com:8443/v1/x?y=1"), ("https", "api.example.com:8443", "/v1/x?y=1"))
        self.assertEqual(_parse_url("http://h?q=1")[2], "/?q=1")
        self.assertEqual(_parse_url("http://h")[2], "/")
        for bad in ("ftp://h", "h/x", "http://", "http://u@h/"):
            with self.subTest(bad), self.assertRaises(http.InvalidUrl):
                _parse_url(bad)

    def test_query_values_are_percent_encoded(self) -> None:
        r = Request("GET", "http://h/f", query=[("city", "São Paulo & co")])
        self.assertEqual(r.full_url(), "http://h/f?city=S%C3%A3o%20Paulo%20%26%20co")
        r = Request("GET", "http://h/f?a=1", query=[("b", "2")])
        self.assertEqual(r.full_url(), "http://h/f?a=1&b=2")

    def test_sending_outside_a_component_says_why(self) -> None:
        with self.assertRaises(http.HttpFailure) as caught:
            http.get("https://api.example/x")
        self.assertIn("wasi:http is not available", str(caught.exception))


if __name__ == "__main__":
    unittest.main()

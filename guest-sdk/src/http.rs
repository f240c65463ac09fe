//! A small, typed HTTP client for tools, over `wasi:http`.
//!
//! The host decides what may be reached: a request to an origin the tool's
//! policy does not allow, or to a private address, fails with
//! [`HttpError::Refused`] before any connection is made. Redirects are
//! returned, not followed.
//!
//! ```no_run
//! use cofferdam_guest::http::Request;
//! # fn f() -> Result<(), cofferdam_guest::ToolError> {
//! let forecast: serde_json::Value = Request::get("https://api.weather.example/v1/forecast")
//!     .query("city", "Lisbon")
//!     .header("accept", "application/json")
//!     .send()?            // refused, timed out, unreachable: a ToolError
//!     .error_for_status()? // 429 → rate-limited, 502/503/504 → transient, …
//!     .json()?;
//! # Ok(()) }
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

use crate::ToolError;

/// An HTTP request to build and send.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A response: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    url: String,
}

/// A request that did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL could not be parsed (`scheme://host[:port]/path`).
    InvalidUrl(String),
    /// The host's policy refused the request (origin not allowed, private
    /// address, too many requests); no connection was made.
    Refused(String),
    /// The upstream could not be reached or did not answer in time.
    Unavailable(String),
    /// Anything else the host reported.
    Other(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            Self::Refused(m) => write!(f, "refused by the host's network policy: {m}"),
            Self::Unavailable(m) => write!(f, "upstream unavailable: {m}"),
            Self::Other(m) => write!(f, "HTTP request failed: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Refusals are permanent (retrying will be refused again); an unreachable
/// or slow upstream is transient.
impl From<HttpError> for ToolError {
    fn from(error: HttpError) -> Self {
        match error {
            HttpError::Unavailable(_) => ToolError::Transient(error.to_string()),
            HttpError::InvalidUrl(_) | HttpError::Refused(_) | HttpError::Other(_) => {
                ToolError::Permanent(error.to_string())
            }
        }
    }
}

impl Request {
    /// A request with any method (`"GET"`, `"POST"`, …).
    pub fn new(method: &str, url: &str) -> Self {
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        };
        Self {
            method,
            url: url.to_owned(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A GET request.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A POST request.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// Adds a query parameter (percent-encoded).
    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json<T: Serialize>(self, value: &T) -> Result<Self, ToolError> {
        let body = serde_json::to_vec(value).map_err(ToolError::permanent)?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        let url = self.full_url();
        let parts = parse_url(&url)?;
        let entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect();
        let headers = Fields::from_list(&entries)
            .map_err(|e| HttpError::Other(format!("invalid header: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let set = |ok: Result<(), ()>, what: &str| {
            ok.map_err(|()| HttpError::InvalidUrl(format!("{what} rejected in {url}")))
        };
        set(request.set_method(&self.method), "method")?;
        set(request.set_scheme(Some(&parts.scheme)), "scheme")?;
        set(request.set_authority(Some(&parts.authority)), "authority")?;
        set(request.set_path_with_query(Some(&parts.path)), "path")?;
        let body = request
            .body()
            .map_err(|()| HttpError::Other("request body taken".into()))?;
        if !self.body.is_empty() {
            let stream = body
                .write()
                .map_err(|()| HttpError::Other("body stream taken".into()))?;
            for chunk in self.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| HttpError::Other(format!("writing the body: {e:?}")))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(|e| describe(&url, &e))?;
        let pending = outgoing_handler::handle(request, None).map_err(|e| describe(&url, &e))?;
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(e))) => return Err(describe(&url, &e)),
            Some(Err(())) | None => return Err(HttpError::Other("response already taken".into())),
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::Other("body taken".into()))?;
        let stream = incoming
            .stream()
            .map_err(|()| HttpError::Other("body taken".into()))?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    let detail = e.to_debug_string();
                    return Err(match wasip2::http::types::http_error_code(&e) {
                        Some(code) => describe(&url, &code),
                        // wasmtime-wasi-http 48 does not turn a host body's error into an
                        // error code, so the host's size limit is recognised by its text.
                        None if detail.contains("body size exceeds limit") => HttpError::Other(
                            format!("{url}: response body larger than the policy allows"),
                        ),
                        None => HttpError::Unavailable(format!(
                            "{url}: reading the body failed: {detail}"
                        )),
                    });
                }
            }
        }
        drop(stream);
        drop(incoming);
        Ok(Response {
            status,
            headers,
            body,
            url,
        })
    }

    fn full_url(&self) -> String {
        if self.query.is_empty() {
            return self.url.clone();
        }
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let pairs: Vec<String> = self
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        format!("{}{separator}{}", self.url, pairs.join("&"))
    }
}

impl Response {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; a body that does not parse is a permanent error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ToolError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ToolError::permanent(format!(
                "{}: response is not the expected JSON: {e}",
                self.url
            ))
        })
    }

    /// Maps an unsuccessful status to the [`ToolError`] the host acts on:
    ///
    /// | status | error |
    /// |---|---|
    /// | 2xx, 3xx | none: the response is returned |
    /// | 429 | `rate_limited` with `Retry-After` (seconds, default 1 s) |
    /// | 408, 502, 503, 504 | `transient` |
    /// | 400, 404, 422 | `invalid_input`: the request built from the input was rejected |
    /// | other 4xx and 5xx | `permanent` |
    pub fn error_for_status(self) -> Result<Self, ToolError> {
        let what = format!("{} answered {}", self.url, self.status);
        match self.status {
            200..=399 => Ok(self),
            429 => {
                let seconds: u32 = self
                    .header("retry-after")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(1);
                Err(ToolError::rate_limited(seconds.saturating_mul(1000)))
            }
            408 | 502 | 503 | 504 => Err(ToolError::transient(what)),
            400 | 404 | 422 => Err(ToolError::invalid_input(what)),
            _ => Err(ToolError::permanent(what)),
        }
    }
}

struct UrlParts {
    scheme: Scheme,
    authority: String,
    path: String,
}

fn parse_url(url: &str) -> Result<UrlParts, HttpError> {
    let bad = || HttpError::InvalidUrl(url.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad()),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    Ok(UrlParts {
        scheme,
        authority: authority.to_owned(),
        path,
    })
}

fn describe(url: &str, error: &ErrorCode) -> HttpError {
    match error {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
            HttpError::Refused(url.to_owned())
        }
        ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTerminated
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::HttpResponseTimeout
        | ErrorCode::HttpResponseIncomplete => HttpError::Unavailable(format!("{url}: {error:?}")),
        other => HttpError::Other(format!("{url}: {other:?}")),
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char);
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let p = parse_url("https://api.example.com:8443/v1/x?y=1").expect("valid");
        assert_eq!(
            (p.authority.as_str(), p.path.as_str()),
            ("api.example.com:8443", "/v1/x?y=1")
        );
        assert_eq!(parse_url("http://h?q=1").expect("valid").path, "/?q=1");
        assert_eq!(parse_url("http://h").expect("valid").path, "/");
        for bad in ["ftp://h", "h/x", "http://", "http://u@h/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        let r = Request::get("http://h/f").query("city", "São Paulo & co");
        assert_eq!(r.full_url(), "http://h/f?city=S%C3%A3o%20Paulo%20%26%20co");
        let r = Request::get("http://h/f?a=1").query("b", "2");
        assert_eq!(r.full_url(), "http://h/f?a=1&b=2");
    }
}

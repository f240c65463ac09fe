//! Webhook sinks for notifications: an event's JSON POSTed to the sink's
//! URL through the outbound checks tools get ([`super::net`]): the URL's own
//! origin is the only one allowed, its name is resolved once, special-purpose
//! addresses (private, loopback, metadata…) are refused unless the sink's
//! `allow_private` names their range, and the connection goes to the address
//! checked. Redirects are not followed.
//!
//! Every request is signed: `X-Cofferdam-Signature: t=UNIX,v1=HEX`, where
//! HEX is HMAC-SHA256 of `UNIX.BODY` under the sink's secret, so a receiver
//! can check who sent it and refuse replays of old requests.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use sha2::Sha256;

use super::net::{ConnectError, HttpSpec, NetPolicy, TokioIo, connect};
use crate::model::notify::{Event, EventKind};

/// The longest a webhook request may take: well inside the 2-minute lease a
/// deliverer holds an entry for, so no other deliverer takes it over while
/// the request is still going.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Requests to one sink at once (its connection limit): a backlog waits for
/// a slot before its request's time starts.
const CONCURRENT: usize = 4;

/// A webhook sink, as an embedder or `[notify.NAME]` gives it.
///
/// ```
/// use cofferdam::Webhook;
/// let hook = Webhook::new("https://hooks.example/cofferdam", "a secret of 16+ bytes")
///     .max_attempts(5);
/// ```
#[derive(Clone)]
pub struct Webhook {
    url: String,
    secret: Vec<u8>,
    allow_private: Vec<String>,
    kinds: Vec<EventKind>,
    timeout: Duration,
    max_attempts: u32,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &redacted(&self.url))
            .field("secret", &"<redacted>")
            .field("allow_private", &self.allow_private)
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// POSTs to `url` (`http` or `https`), signed with `secret` (at least
    /// 16 bytes), every event kind, 10 s per request, 8 attempts.
    pub fn new(url: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
            allow_private: Vec::new(),
            kinds: EventKind::ALL.to_vec(),
            timeout: Duration::from_secs(10),
            max_attempts: 8,
        }
    }

    /// Allows an address range (CIDR) the URL may resolve to that would be
    /// refused as special-purpose (`127.0.0.0/8` for a local receiver).
    pub fn allow_private(mut self, cidr: impl Into<String>) -> Self {
        self.allow_private.push(cidr.into());
        self
    }

    /// The event kinds it hears (default: all).
    pub fn events(mut self, kinds: impl IntoIterator<Item = EventKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// Time for one request, connection to status line (at most
    /// [`MAX_TIMEOUT`]: a deliverer's lease must outlast its request).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT);
        self
    }

    /// Deliveries tried before an event is given up (dead).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }
}

/// A sink that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The URL is not an absolute `http`/`https` URL with a host (shown
    /// without its path, query or credentials, which may hold secrets).
    #[error("`{url}` is not a webhook URL: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// An `allow_private` entry is not a CIDR range.
    #[error("`{0}` in allow_private is not an address range (CIDR)")]
    BadRange(String),
    /// The secret is too short to sign with.
    #[error("the signing secret has {0} bytes; it needs at least 16")]
    ShortSecret(usize),
    /// It hears no events.
    #[error("it hears no events")]
    NoEvents,
}

/// A webhook ready to deliver: its URL parsed, its policy built.
pub(crate) struct Sink {
    pub kinds: Vec<EventKind>,
    pub max_attempts: u32,
    pub timeout: Duration,
    uri: http::Uri,
    origin: String,
    host: String,
    port: u16,
    tls: bool,
    policy: Arc<NetPolicy>,
    secret: Vec<u8>,
    slots: tokio::sync::Semaphore,
}

/// `url` as errors and logs show it: its scheme and authority without
/// credentials; no path or query (hook URLs often carry a token there).
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}/…")
}

/// How one delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Posted {
    /// A 2xx answer.
    Delivered,
    /// Worth another try (connection failure, timeout, 408, 425, 429,
    /// 5xx), after `after` if the sink said so.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Never worth another try: refused by policy, or a 3xx/4xx answer.
    Refused(String),
}

impl Sink {
    pub(crate) fn new(hook: &Webhook) -> Result<Self, SinkError> {
        let bad = |reason: &str| SinkError::BadUrl {
            url: redacted(&hook.url),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = hook.url.parse().map_err(|_| bad("it does not parse"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme is not http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("it has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not allowed"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let scheme = if tls { "https" } else { "http" };
        let shown = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let origin = format!("{scheme}://{shown}:{port}");
        let policy = NetPolicy::from_spec(&HttpSpec {
            allow: vec![origin.clone()],
            allow_private: hook.allow_private.clone(),
            max_connections: Some(4),
            ..HttpSpec::default()
        })
        .map_err(|e| match e {
            crate::model::policy::NetPolicyError::BadRange(r) => SinkError::BadRange(r),
            other => bad(&other.to_string()),
        })?;
        if hook.secret.len() < 16 {
            return Err(SinkError::ShortSecret(hook.secret.len()));
        }
        if hook.kinds.is_empty() {
            return Err(SinkError::NoEvents);
        }
        Ok(Self {
            kinds: hook.kinds.clone(),
            max_attempts: hook.max_attempts,
            timeout: hook.timeout,
            uri,
            origin,
            host,
            port,
            tls,
            policy: Arc::new(policy),
            secret: hook.secret.clone(),
            slots: tokio::sync::Semaphore::new(CONCURRENT),
        })
    }

    /// Where it posts, without path or query.
    pub(crate) fn url(&self) -> String {
        format!("{}/…", self.origin)
    }

    /// POSTs `event` (attempt `attempt`), signed at `unix` seconds.
    pub(crate) async fn post(&self, event: &Event, attempt: u32, unix: i64) -> Posted {
        let body = match serde_json::to_vec(event) {
            Ok(body) => Bytes::from(body),
            Err(e) => return Posted::Refused(format!("the event does not encode: {e}")),
        };
        let signature = signature(&self.secret, unix, &body);
        // Waiting for a slot is not the sink's slowness: the timeout starts after.
        let Ok(_slot) = self.slots.acquire().await else {
            return Posted::Refused("the sink is closed".into());
        };
        match tokio::time::timeout(self.timeout, self.send(event, attempt, signature, body)).await {
            Ok(posted) => posted,
            Err(_) => Posted::Retry {
                error: format!("no answer within {} ms", self.timeout.as_millis()),
                after: None,
            },
        }
    }

    async fn send(&self, event: &Event, attempt: u32, signature: String, body: Bytes) -> Posted {
        let retry = |error: String| Posted::Retry { error, after: None };
        let (io, _permit) =
            match connect(&self.policy, &self.origin, &self.host, self.port, self.tls).await {
                Ok(connected) => connected,
                Err(ConnectError::Refused(reason)) => return Posted::Refused(reason),
                Err(ConnectError::Http(e)) => {
                    return retry(format!("cannot connect to {}: {e}", self.origin));
                }
            };
        let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo(io)).await {
            Ok(pair) => pair,
            Err(e) => return retry(format!("{}: {e}", self.origin)),
        };
        let driver = tokio::spawn(conn);
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = self.uri.authority().map_or("", |a| a.as_str());
        let request = http::Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("cofferdam/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-cofferdam-event", event.kind.as_str())
            .header("x-cofferdam-event-id", event.id.as_str())
            .header("x-cofferdam-delivery-attempt", attempt.to_string())
            .header("x-cofferdam-signature", signature)
            .body(Full::new(body));
        let request = match request {
            Ok(request) => request,
            Err(e) => return Posted::Refused(format!("cannot build the request: {e}")),
        };
        let posted = match sender.send_request(request).await {
            Ok(response) => judge(response.status(), response.headers()),
            Err(e) => retry(format!("{}: {e}", self.origin)),
        };
        driver.abort();
        posted
    }
}

/// What a sink's answer means.
fn judge(status: http::StatusCode, headers: &http::HeaderMap) -> Posted {
    let code = status.as_u16();
    if status.is_success() {
        return Posted::Delivered;
    }
    if matches!(code, 408 | 425 | 429) || status.is_server_error() {
        let after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(3600)));
        return Posted::Retry {
            error: format!("the sink answered {status}"),
            after,
        };
    }
    Posted::Refused(format!("the sink answered {status}"))
}

/// The `X-Cofferdam-Signature` value for `body` sent at `unix` seconds:
/// `t=UNIX,v1=HEX(HMAC-SHA256(secret, "UNIX." + body))`. A receiver
/// recomputes it with the shared secret, compares in constant time and
/// refuses a `t` too far from its own clock.
pub fn webhook_signature(secret: &[u8], unix: i64, body: &[u8]) -> String {
    signature(secret, unix, body)
}

fn signature(secret: &[u8], unix: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_secrets_and_ranges_are_checked() {
        let ok = Webhook::new("http://127.0.0.1:9/hook", "0123456789abcdef");
        assert!(Sink::new(&ok).is_ok());
        for url in ["ftp://x/", "/relative", "http://user:pw@host/", "not a url"] {
            let hook = Webhook::new(url, "0123456789abcdef");
            let err = Sink::new(&hook).err();
            assert!(matches!(err, Some(SinkError::BadUrl { .. })), "{url}");
            // Credentials never appear in the error.
            assert!(!err.unwrap().to_string().contains("pw"), "{url}");
        }
        let hooked = Webhook::new(
            "https://hooks.example/T000/B000/XXXXsecret",
            "0123456789abcdef",
        );
        assert!(!format!("{hooked:?}").contains("XXXXsecret"));
        assert_eq!(
            Sink::new(&hooked).unwrap().url(),
            "https://hooks.example:443/…"
        );
        let long = Webhook::new("https://h/", "0123456789abcdef").timeout(Duration::MAX);
        assert_eq!(Sink::new(&long).unwrap().timeout, MAX_TIMEOUT);
        assert_eq!(
            Sink::new(&Webhook::new("https://h/", "short")).err(),
            Some(SinkError::ShortSecret(5))
        );
        assert_eq!(
            Sink::new(&ok.clone().allow_private("10.0.0.0/33")).err(),
            Some(SinkError::BadRange("10.0.0.0/33".into()))
        );
        assert_eq!(Sink::new(&ok.events([])).err(), Some(SinkError::NoEvents));
    }

    #[test]
    fn answers_are_judged_by_status() {
        let none = http::HeaderMap::new();
        assert_eq!(
            judge(http::StatusCode::NO_CONTENT, &none),
            Posted::Delivered
        );
        assert!(matches!(
            judge(http::StatusCode::NOT_FOUND, &none),
            Posted::Refused(_)
        ));
        let mut later = http::HeaderMap::new();
        later.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert!(matches!(
            judge(http::StatusCode::TOO_MANY_REQUESTS, &later),
            Posted::Retry { after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            judge(http::StatusCode::BAD_GATEWAY, &none),
            Posted::Retry { after: None, .. }
        ));
    }

    #[test]
    fn signatures_are_hmac_sha256_of_time_and_body() {
        // RFC 4231 style check against an independent computation.
        let sig = signature(b"key-of-sixteen!!", 1_700_000_000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key-of-sixteen!!").unwrap();
        mac.update(b"1700000000.{}");
        let hex = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=1700000000,v1={hex}"));
    }
}

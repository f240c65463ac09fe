//! Outbound HTTP for tools (wasi:http), deny by default.
//!
//! A request leaves only if its origin (`scheme://host:port`) matches the
//! tool's allowlist. The host then resolves the name itself, refuses every
//! address in one table of special-purpose ranges (the IANA IPv4 and IPv6
//! registries: private, loopback, link-local and metadata, CGNAT,
//! documentation, multicast…, and the forms that embed an IPv4 address)
//! unless the policy allows that range explicitly, and connects to the
//! address it checked, so a second lookup cannot rebind the name. TLS
//! verifies the certificate against the name, not the address. Redirects are
//! returned to the tool, never followed by the host.
//!
//! What this module does not do: decide retries. Upstream statuses reach the
//! tool, which maps them to `tool-error` cases (the guest SDK does it for
//! 429, 5xx and connection failures).

use std::fmt;
use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::{Pin, pin};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

pub use crate::model::policy::NetPolicyError;
use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiHttpHooks};

type WasiBody = wasmtime_wasi_http::WasiBody;
type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

/// `[http]` in a tool policy: which origins the tool may call, and limits.
///
/// ```toml
/// [http]
/// allow = ["https://api.weather.example", "https://*.flights.example:443", "http://127.0.0.1:8000-8099"]
/// allow_private = ["127.0.0.0/8"]   # tests and local services only
/// max_requests = 16                 # per call
/// max_connections = 4               # per tool, at once
/// max_response_bytes = 4194304
/// timeout_ms = 10000                # per request, never beyond the call's deadline
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// Allowed origins: `scheme://host[:port]`, `scheme://*.domain[:port]`,
    /// or a port range `scheme://host:8000-8099`. The port defaults to the
    /// scheme's.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Address ranges (CIDR) that would otherwise be refused as special-purpose
    /// (private, loopback, link-local, …); an IPv4 range also allows its
    /// IPv4-mapped and NAT64 forms.
    #[serde(default)]
    pub allow_private: Vec<String>,
    /// Requests per call [default 16].
    pub max_requests: Option<u32>,
    /// Connections of the tool open at once [default 4].
    pub max_connections: Option<u32>,
    /// Largest response body accepted, in bytes [default 4 MiB].
    pub max_response_bytes: Option<u64>,
    /// Time for one request, connection to last byte [default 30 s].
    pub timeout_ms: Option<u64>,
}

/// A resolved `[http]`: the origin patterns, ranges and limits in force.
#[derive(Debug, Clone)]
pub(crate) struct NetPolicy {
    origins: Vec<OriginPattern>,
    allow_private: Vec<IpNet>,
    pub max_requests: u32,
    pub max_response_bytes: u64,
    pub timeout: Duration,
    /// Connections of this tool open at once.
    pub connections: Arc<Semaphore>,
}

impl NetPolicy {
    /// Nothing allowed: every request is refused.
    pub(crate) fn deny_all() -> Self {
        Self::from_spec(&HttpSpec::default()).unwrap_or_else(|_| unreachable!("empty spec"))
    }

    pub(crate) fn from_spec(spec: &HttpSpec) -> Result<Self, NetPolicyError> {
        let origins = spec
            .allow
            .iter()
            .map(|o| o.parse().map_err(|()| NetPolicyError::BadOrigin(o.clone())))
            .collect::<Result<_, _>>()?;
        let allow_private = spec
            .allow_private
            .iter()
            .map(|r| r.parse().map_err(|_| NetPolicyError::BadRange(r.clone())))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            origins,
            allow_private,
            max_requests: spec.max_requests.unwrap_or(16),
            max_response_bytes: spec.max_response_bytes.unwrap_or(4 << 20),
            timeout: Duration::from_millis(spec.timeout_ms.unwrap_or(30_000)),
            connections: Arc::new(Semaphore::new(
                spec.max_connections.unwrap_or(4).max(1) as usize
            )),
        })
    }

    pub(crate) fn allows_origin(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.origins.iter().any(|o| o.matches(scheme, host, port))
    }

    fn allows_address(&self, ip: IpAddr) -> bool {
        is_public(ip)
            || self.allow_private.iter().any(|net| {
                net.contains(&ip) || embedded_v4(ip).is_some_and(|v4| net.contains(&IpAddr::V4(v4)))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    /// Lowercase host; `*.example.com` matches subdomains of example.com.
    host: String,
    ports: (u16, u16),
}

impl FromStr for OriginPattern {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (scheme, rest) = s.split_once("://").ok_or(())?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return Err(()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(());
        }
        // `[v6]:port`, `[v6]`, `host:port`, `host`.
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or(())?;
            (addr.to_owned(), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (rest.to_owned(), None),
            }
        };
        let ports = match port {
            None => (default_port, default_port),
            Some(p) => match p.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (lo.parse().map_err(drop)?, hi.parse().map_err(drop)?);
                    if lo > hi {
                        return Err(());
                    }
                    (lo, hi)
                }
                None => {
                    let p = p.parse().map_err(drop)?;
                    (p, p)
                }
            },
        };
        let host = host.to_ascii_lowercase();
        let valid = match host.strip_prefix("*.") {
            Some(domain) => !domain.is_empty() && !domain.contains('*'),
            None => !host.is_empty() && !host.contains('*'),
        };
        if !valid {
            return Err(());
        }
        Ok(Self {
            scheme: scheme.to_owned(),
            host,
            ports,
        })
    }
}

impl OriginPattern {
    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => {
                host.len() > domain.len() + 1
                    && host.ends_with(domain)
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            }
            None => self.host == host,
        };
        self.scheme == scheme && host_ok && (self.ports.0..=self.ports.1).contains(&port)
    }
}

/// How the host treats an address inside a [`SpecialRange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    /// Refused, unless an operator names it in `allow_private`.
    Refuse,
    /// Judged as the IPv4 address in its last 32 bits (IPv4-mapped, NAT64
    /// well-known prefix): refused when that address is special, allowed
    /// when it is public.
    EmbeddedV4,
}

/// One entry of the outbound address table.
#[derive(Debug)]
struct SpecialRange {
    net: IpNet,
    /// What the range is for, as its registry names it.
    name: &'static str,
    treatment: Treatment,
}

const fn v4(octets: [u8; 4], prefix: u8, name: &'static str) -> SpecialRange {
    let [a, b, c, d] = octets;
    SpecialRange {
        net: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)),
        name,
        treatment: Treatment::Refuse,
    }
}

const fn v6(segments: [u16; 8], prefix: u8, name: &'static str) -> SpecialRange {
    let [a, b, c, d, e, f, g, h] = segments;
    SpecialRange {
        net: IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::new(a, b, c, d, e, f, g, h),
            prefix,
        )),
        name,
        treatment: Treatment::Refuse,
    }
}

const fn embedding_v4(segments: [u16; 8], name: &'static str) -> SpecialRange {
    SpecialRange {
        treatment: Treatment::EmbeddedV4,
        ..v6(segments, 96, name)
    }
}

/// Every range a tool may not reach unless an operator allows it: the IANA
/// IPv4 and IPv6 Special-Purpose Address Registries (including the entries
/// they mark globally reachable, such as AS112 and AMT: no tool needs an
/// anycast sink), multicast, and the deprecated blocks that still route
/// somewhere private (IPv4-compatible `::/96`, site-local `fec0::/10`).
///
/// Addresses that embed an IPv4 address are covered three ways: IPv4-mapped
/// and the NAT64 well-known prefix are judged as the address they carry;
/// 6to4 (`2002::/16`), Teredo (`2001::/32`), IPv4-compatible and local-use
/// NAT64 are refused whatever they carry (all four are deprecated or
/// site-specific, and decoding them would trust a relay the host does not
/// control).
///
/// A more specific range comes before the range that contains it, so the
/// first match names the most specific purpose (a test holds this).
const SPECIAL_RANGES: &[SpecialRange] = &[
    v4([0, 0, 0, 0], 8, "\"this network\""),
    v4([10, 0, 0, 0], 8, "private-use"),
    v4([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
    v4([127, 0, 0, 0], 8, "loopback"),
    v4([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
    v4([172, 16, 0, 0], 12, "private-use"),
    v4([192, 0, 0, 0], 24, "IETF protocol assignments"),
    v4([192, 0, 2, 0], 24, "documentation (TEST-NET-1)"),
    v4([192, 31, 196, 0], 24, "AS112-v4"),
    v4([192, 52, 193, 0], 24, "AMT"),
    v4([192, 88, 99, 0], 24, "6to4 relay anycast (deprecated)"),
    v4([192, 168, 0, 0], 16, "private-use"),
    v4([192, 175, 48, 0], 24, "direct delegation AS112 service"),
    v4([198, 18, 0, 0], 15, "benchmarking"),
    v4([198, 51, 100, 0], 24, "documentation (TEST-NET-2)"),
    v4([203, 0, 113, 0], 24, "documentation (TEST-NET-3)"),
    v4([224, 0, 0, 0], 4, "multicast"),
    v4([255, 255, 255, 255], 32, "limited broadcast"),
    v4([240, 0, 0, 0], 4, "reserved"),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible (deprecated)"),
    embedding_v4([0, 0, 0, 0, 0, 0xffff, 0, 0], "IPv4-mapped"),
    embedding_v4([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], "NAT64 well-known prefix"),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local-use NAT64"),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only"),
    v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64, "dummy IPv6 prefix"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo"),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 1],
        128,
        "port control protocol anycast",
    ),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128, "TURN anycast"),
    v6(
        [0x2001, 1, 0, 0, 0, 0, 0, 3],
        128,
        "DNS-SD service registration anycast",
    ),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "benchmarking"),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, "AMT"),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48, "AS112-v6"),
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, "ORCHID (deprecated)"),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, "ORCHIDv2"),
    v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28, "drone remote ID DETs"),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments",
    ),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4"),
    v6(
        [0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0],
        48,
        "direct delegation AS112 service",
    ),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
    v6(
        [0x5f00, 0, 0, 0, 0, 0, 0, 0],
        16,
        "segment routing (SRv6) SIDs",
    ),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique-local"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local (deprecated)"),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
];

/// The special range that makes `ip` non-public (for an IPv4-mapped or
/// NAT64 address, the range of the IPv4 address it carries), or `None` when
/// `ip` is on the public internet.
fn special_range(ip: IpAddr) -> Option<&'static SpecialRange> {
    let range = SPECIAL_RANGES.iter().find(|r| r.net.contains(&ip))?;
    match embedded_v4(ip) {
        Some(v4) if range.treatment == Treatment::EmbeddedV4 => special_range(IpAddr::V4(v4)),
        _ => Some(range),
    }
}

/// The IPv4 address an IPv4-mapped or NAT64 (well-known prefix) address
/// carries: what the connection reaches in the end.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    SPECIAL_RANGES
        .iter()
        .filter(|r| r.treatment == Treatment::EmbeddedV4)
        .any(|r| r.net.contains(&ip))
        .then(|| {
            let [.., a, b, c, d] = v6.octets();
            Ipv4Addr::new(a, b, c, d)
        })
}

/// Whether an address is on the public internet: in none of the
/// [`SPECIAL_RANGES`].
fn is_public(ip: IpAddr) -> bool {
    special_range(ip).is_none()
}

/// `10.0.0.1 (private-use 10.0.0.0/8)`: an address and why it is refused.
fn explain(ip: IpAddr) -> String {
    match special_range(ip) {
        Some(range) => format!("{ip} ({} {})", range.name, range.net),
        None => ip.to_string(),
    }
}

/// What a call's outbound HTTP did: counts, bytes, refusals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HttpStats {
    /// Requests that reached an upstream.
    pub requests: u32,
    /// Request body bytes sent.
    pub bytes_out: u64,
    /// Response body bytes received.
    pub bytes_in: u64,
    /// Requests refused by the policy, each with the reason.
    pub refused: Vec<String>,
}

/// Counters shared between a call's hooks and the response bodies it returns.
#[derive(Debug, Default)]
pub(crate) struct HttpCounters {
    requests: AtomicU32,
    attempted: AtomicU32,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    refused: Mutex<Vec<String>>,
}

impl HttpCounters {
    pub(crate) fn snapshot(&self) -> HttpStats {
        HttpStats {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            refused: self
                .refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn refuse(&self, reason: String) -> HttpError {
        tracing::info!(target: "cofferdam::net", %reason, "outbound request refused");
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(reason);
        HttpError::HttpRequestDenied
    }
}

/// The per-call `wasi:http` hooks: policy checks, pinned connections, limits.
pub(crate) struct Hooks {
    pub policy: Arc<NetPolicy>,
    pub counters: Arc<HttpCounters>,
    /// The call's deadline: no request outlives it.
    pub deadline: Instant,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let policy = Arc::clone(&self.policy);
        let counters = Arc::clone(&self.counters);
        let deadline = self.deadline;
        Box::new(async move { send(request, policy, counters, deadline).await })
    }
}

async fn send(
    mut request: http::Request<WasiBody>,
    policy: Arc<NetPolicy>,
    counters: Arc<HttpCounters>,
    deadline: Instant,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
> {
    let uri = request.uri().clone();
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    let scheme = if tls { "https" } else { "http" };
    let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let origin = format!("{scheme}://{host}:{port}");
    if counters.attempted.fetch_add(1, Ordering::Relaxed) >= policy.max_requests {
        return Err(counters.refuse(format!(
            "{origin}: more than {} requests in one call",
            policy.max_requests
        )));
    }
    if !policy.allows_origin(scheme, &host, port) {
        return Err(counters.refuse(format!("{origin}: origin not in the tool's allowlist")));
    }

    let budget = deadline
        .saturating_duration_since(Instant::now())
        .min(policy.timeout);
    let work = async {
        let (io, _connection) = match connect(&policy, &origin, &host, port, tls).await {
            Ok(connected) => connected,
            Err(ConnectError::Refused(reason)) => {
                tracing::info!(target: "cofferdam::net", %reason, "outbound request refused");
                counters
                    .refused
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(reason);
                return Err(HttpError::DestinationIpProhibited);
            }
            Err(ConnectError::Http(e)) => return Err(e),
        };
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo(io))
            .await?;
        // Origin-form on the wire; the Host header carries the name.
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let counted_out = Arc::clone(&counters);
        let request = request.map(|body| {
            body.map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    counted_out
                        .bytes_out
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                frame
            })
            .boxed_unsync()
        });
        let mut send = pin!(sender.send_request(request));
        let mut conn = Some(conn);
        let response = poll_fn(|cx| match send.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(result.map_err(HttpError::from)),
            Poll::Pending => {
                let Some(driver) = conn.as_mut() else {
                    return Poll::Pending;
                };
                let done = ready!(Pin::new(driver).poll(cx));
                conn = None;
                match done {
                    Ok(()) => send.as_mut().poll(cx).map_err(HttpError::from),
                    Err(e) => Poll::Ready(Err(HttpError::from(e))),
                }
            }
        })
        .await?;
        Ok::<_, HttpError>((response, conn, _connection))
    };
    let (response, conn, permit) = tokio::time::timeout(budget, work)
        .await
        .map_err(|_| HttpError::ConnectionTimeout)??;
    let limit = policy.max_response_bytes;
    let body_deadline = tokio::time::Instant::now() + budget;
    let response = response.map(|incoming| {
        CappedBody {
            inner: incoming,
            seen: 0,
            limit,
            counters: Arc::clone(&counters),
            deadline: Box::pin(tokio::time::sleep_until(body_deadline)),
        }
        .boxed_unsync()
    });
    let driver = async move {
        let _permit = permit;
        match conn {
            Some(conn) => conn.await.map_err(HttpError::from),
            None => Ok(()),
        }
    };
    Ok((response, Box::new(driver)))
}

/// Why an outbound connection was not made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The policy refused every address the name resolves to (the reason
    /// names them).
    Refused(String),
    /// Resolving, connecting or the TLS handshake failed.
    Http(HttpError),
}

/// Resolves `host` once, keeps the first address `policy` allows and
/// connects to that address (TLS for `tls`, verified against the name),
/// holding one of the policy's connection permits. The caller has checked
/// the origin against the allowlist.
pub(crate) async fn connect(
    policy: &Arc<NetPolicy>,
    origin: &str,
    host: &str,
    port: u16,
    tls: bool,
) -> Result<(Box<dyn IoStream>, OwnedSemaphorePermit), ConnectError> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| {
                ConnectError::Http(HttpError::DnsError {
                    rcode: None,
                    info_code: None,
                })
            })?
            .collect(),
    };
    let Some(addr) = addrs
        .iter()
        .copied()
        .find(|a| policy.allows_address(a.ip()))
    else {
        let shown: Vec<String> = addrs.iter().map(|a| explain(a.ip())).collect();
        return Err(ConnectError::Refused(format!(
            "{origin}: resolves only to non-public addresses ({})",
            shown.join(", ")
        )));
    };
    let permit = Arc::clone(&policy.connections)
        .acquire_owned()
        .await
        .map_err(|_| ConnectError::Http(HttpError::ConnectionLimitReached))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| ConnectError::Http(HttpError::Connect(e)))?;
    let io: Box<dyn IoStream> = if tls {
        Box::new(tls_connect(host, tcp).await.map_err(ConnectError::Http)?)
    } else {
        Box::new(tcp)
    };
    Ok((io, permit))
}

/// A response body that counts bytes, stops at the size limit and at the deadline.
struct CappedBody {
    inner: hyper::body::Incoming,
    seen: u64,
    limit: u64,
    counters: Arc<HttpCounters>,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)));
        }
        match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            None => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    self.counters
                        .bytes_in
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if self.seen > self.limit {
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(
                            self.limit,
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

pub(crate) trait IoStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> IoStream for T {}

async fn tls_connect(
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config()?));
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| HttpError::TlsCertificateError)?;
    connector.connect(name, tcp).await.map_err(HttpError::Tls)
}

/// Client TLS: Mozilla's roots (webpki-roots), ring, safe protocol versions.
fn tls_config() -> Result<rustls::ClientConfig, HttpError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    // An explicit provider: `builder()` would panic if another crate enabled a second one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| HttpError::TlsProtocolError)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// tokio I/O as hyper I/O.
pub(crate) struct TokioIo(pub(crate) Box<dyn IoStream>);

impl hyper::rt::Read for TokioIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        // SAFETY-free path: read into a temporary buffer, then copy.
        let mut tmp = vec![0u8; buf.remaining().min(64 << 10)];
        let mut read_buf = tokio::io::ReadBuf::new(&mut tmp);
        ready!(tokio::io::AsyncRead::poll_read(
            Pin::new(&mut self.0),
            cx,
            &mut read_buf
        ))?;
        buf.put_slice(read_buf.filled());
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for TokioIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn private_and_special_ranges_are_not_public() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::10.0.0.1",
        ] {
            assert!(!is_public(ip(bad)), "{bad} counted as public");
        }
        for good in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(good)), "{good} counted as private");
        }
    }

    /// Each entry of the table, as the registries write it, with an address
    /// inside: all refused, each named by its own (most specific) entry.
    const EXPECTED: &[(&str, &str)] = &[
        ("0.0.0.0/8", "0.1.2.3"),
        ("10.0.0.0/8", "10.20.30.40"),
        ("100.64.0.0/10", "100.127.255.254"),
        ("127.0.0.0/8", "127.8.9.10"),
        ("169.254.0.0/16", "169.254.169.254"),
        ("172.16.0.0/12", "172.31.0.1"),
        ("192.0.0.0/24", "192.0.0.170"),
        ("192.0.2.0/24", "192.0.2.1"),
        ("192.31.196.0/24", "192.31.196.1"),
        ("192.52.193.0/24", "192.52.193.1"),
        ("192.88.99.0/24", "192.88.99.1"),
        ("192.168.0.0/16", "192.168.1.1"),
        ("192.175.48.0/24", "192.175.48.6"),
        ("198.18.0.0/15", "198.19.255.255"),
        ("198.51.100.0/24", "198.51.100.7"),
        ("203.0.113.0/24", "203.0.113.9"),
        ("224.0.0.0/4", "239.255.255.250"),
        ("255.255.255.255/32", "255.255.255.255"),
        ("240.0.0.0/4", "250.1.2.3"),
        ("::/128", "::"),
        ("::1/128", "::1"),
        ("::/96", "::10.0.0.1"),
        ("::ffff:0:0/96", "::ffff:10.0.0.1"),
        ("64:ff9b::/96", "64:ff9b::7f00:1"),
        ("64:ff9b:1::/48", "64:ff9b:1::808:808"),
        ("100::/64", "100::dead"),
        ("100:0:0:1::/64", "100:0:0:1::1"),
        ("2001::/32", "2001:0:4136:e378:8000:63bf:3fff:fdd2"),
        ("2001:1::1/128", "2001:1::1"),
        ("2001:1::2/128", "2001:1::2"),
        ("2001:1::3/128", "2001:1::3"),
        ("2001:2::/48", "2001:2::1"),
        ("2001:3::/32", "2001:3::1"),
        ("2001:4:112::/48", "2001:4:112::1"),
        ("2001:10::/28", "2001:10::1"),
        ("2001:20::/28", "2001:2f::1"),
        ("2001:30::/28", "2001:30::1"),
        ("2001::/23", "2001:1ff::1"),
        ("2001:db8::/32", "2001:db8::1"),
        ("2002::/16", "2002:a00:1::1"),
        ("2620:4f:8000::/48", "2620:4f:8000::1"),
        ("3fff::/20", "3fff:fff::1"),
        ("5f00::/16", "5f00::1"),
        ("fc00::/7", "fd00:ec2::254"),
        ("fe80::/10", "fe80::1"),
        ("fec0::/10", "fec0::1"),
        ("ff00::/8", "ff02::1"),
    ];

    #[test]
    fn every_special_range_is_refused_and_named() {
        let table: Vec<IpNet> = SPECIAL_RANGES.iter().map(|r| r.net).collect();
        let expected: Vec<IpNet> = EXPECTED
            .iter()
            .map(|(net, _)| net.parse().expect("a CIDR"))
            .collect();
        assert_eq!(table, expected, "the table, entry by entry");
        for (net, sample) in EXPECTED {
            assert!(!is_public(ip(sample)), "{sample} counted as public");
            let range = SPECIAL_RANGES
                .iter()
                .find(|r| r.net.contains(&ip(sample)))
                .expect("in the table");
            assert_eq!(
                range.net,
                net.parse::<IpNet>().expect("a CIDR"),
                "{sample} named by its own entry"
            );
        }
    }

    #[test]
    fn specific_ranges_come_before_the_ranges_that_contain_them() {
        for (i, broad) in SPECIAL_RANGES.iter().enumerate() {
            for narrow in &SPECIAL_RANGES[i + 1..] {
                assert!(
                    broad.net == narrow.net || !broad.net.contains(&narrow.net),
                    "{} shadows {}",
                    broad.net,
                    narrow.net
                );
            }
        }
    }

    #[test]
    fn neighbours_of_special_ranges_are_public() {
        for good in [
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.88.98.255",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2000::1",
            "2001:200::1",
            "2001:db7:ffff::1",
            "2001:db9::1",
            "2003::1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "64:ff9b:2::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert!(is_public(ip(good)), "{good} counted as special");
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_where_it_is_reachable_and_refused_where_it_is_not() {
        // Mapped and NAT64 (well-known prefix): what they carry decides.
        assert_eq!(
            explain(ip("::ffff:192.168.0.1")),
            "::ffff:192.168.0.1 (private-use 192.168.0.0/16)"
        );
        assert_eq!(
            explain(ip("64:ff9b::169.254.169.254")),
            "64:ff9b::a9fe:a9fe (link-local (cloud metadata) 169.254.0.0/16)"
        );
        // Compatible, 6to4, Teredo and local-use NAT64: refused whatever they carry.
        for public_inside in [
            "::8.8.8.8",
            "2002:808:808::1",
            "2001:0:808:808::1",
            "64:ff9b:1::8.8.8.8",
        ] {
            assert!(
                !is_public(ip(public_inside)),
                "{public_inside} counted as public"
            );
        }
    }

    /// splitmix64: a fixed seed, so the sweep is the same on every run.
    struct Sweep(u64);

    impl Sweep {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn wide(&mut self) -> u128 {
            (u128::from(self.next()) << 64) | u128::from(self.next())
        }

        /// Some addresses of `net`: its first and last, and random ones between.
        fn inside(&mut self, net: &IpNet, n: usize) -> Vec<IpAddr> {
            let mut all = vec![net.network(), net.broadcast()];
            for _ in 0..n {
                all.push(match net {
                    IpNet::V4(v4) => {
                        let host = u32::from(v4.hostmask()) & (self.next() as u32);
                        IpAddr::V4((u32::from(v4.network()) | host).into())
                    }
                    IpNet::V6(v6) => {
                        let host = u128::from(v6.hostmask()) & self.wide();
                        IpAddr::V6((u128::from(v6.network()) | host).into())
                    }
                });
            }
            all
        }
    }

    /// Every way an IPv6 address can carry `v4`: mapped, NAT64 (both
    /// prefixes), IPv4-compatible, 6to4 and Teredo (the client address is
    /// stored inverted).
    fn embeddings(v4: Ipv4Addr, noise: u64) -> [Ipv6Addr; 6] {
        let x = u32::from(v4);
        let (hi, lo) = ((x >> 16) as u16, x as u16);
        let [n0, n1, n2, n3] = [
            noise as u16,
            (noise >> 16) as u16,
            (noise >> 32) as u16,
            (noise >> 48) as u16,
        ];
        [
            Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, hi, lo),
            Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
            Ipv6Addr::new(0x64, 0xff9b, 1, n0, n1, n2, hi, lo),
            Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo),
            Ipv6Addr::new(0x2002, hi, lo, n0, n1, n2, n3, noise as u16 ^ 1),
            Ipv6Addr::new(0x2001, 0, n0, n1, n2, n3, !hi, !lo),
        ]
    }

    #[test]
    fn random_addresses_in_special_ranges_and_their_embeddings_are_refused() {
        let mut sweep = Sweep(0x00c0_ffee_da11);
        let mut checked = 0;
        for range in SPECIAL_RANGES {
            for addr in sweep.inside(&range.net, 200) {
                match (range.treatment, addr) {
                    (Treatment::EmbeddedV4, _) => {} // judged by what it carries: below
                    (Treatment::Refuse, IpAddr::V4(v4)) => {
                        assert!(
                            !is_public(addr),
                            "{addr} in {} counted as public",
                            range.net
                        );
                        for form in embeddings(v4, sweep.next()) {
                            assert!(
                                !is_public(IpAddr::V6(form)),
                                "{form} carries {v4}, counted as public"
                            );
                        }
                        checked += 7;
                    }
                    (Treatment::Refuse, IpAddr::V6(_)) => {
                        assert!(
                            !is_public(addr),
                            "{addr} in {} counted as public",
                            range.net
                        );
                        checked += 1;
                    }
                }
            }
        }
        // Public IPv4 stays reachable through mapped and NAT64, never through the rest.
        let public: IpNet = "8.0.0.0/7".parse().expect("net");
        for addr in sweep.inside(&public, 500) {
            let IpAddr::V4(v4) = addr else { unreachable!() };
            assert!(is_public(addr), "{addr}");
            let [mapped, nat64, local_nat64, compatible, six_to_four, teredo] =
                embeddings(v4, sweep.next());
            for reachable in [mapped, nat64] {
                assert!(is_public(IpAddr::V6(reachable)), "{reachable}");
            }
            for refused in [local_nat64, compatible, six_to_four, teredo] {
                assert!(!is_public(IpAddr::V6(refused)), "{refused}");
            }
        }
        for net in ["2606:4700::/32", "2a00:1450::/32", "2400:cb00::/32"] {
            for addr in sweep.inside(&net.parse().expect("net"), 200) {
                assert!(is_public(addr), "{addr}");
            }
        }
        assert!(checked > 20_000, "the sweep ran ({checked} addresses)");
    }

    #[test]
    fn ranges_an_operator_names_are_allowed_and_nothing_else() {
        let spec = HttpSpec {
            allow_private: vec![
                "fec0::/10".into(),
                "2002::/16".into(),
                "64:ff9b:1::/48".into(),
                "100::/64".into(),
                "10.1.0.0/16".into(),
            ],
            ..HttpSpec::default()
        };
        let policy = NetPolicy::from_spec(&spec).expect("valid");
        for allowed in [
            "fec0::1",
            "2002:a00:1::1",
            "64:ff9b:1::a00:1",
            "100::1",
            "10.1.2.3",
            "::ffff:10.1.2.3",
            "64:ff9b::10.1.2.3",
            "8.8.8.8",
        ] {
            assert!(policy.allows_address(ip(allowed)), "{allowed} refused");
        }
        for refused in [
            "10.2.0.1",
            "::ffff:10.2.0.1",
            "::10.1.2.3",
            "fe80::1",
            "2001::1",
            "100:0:0:1::1",
        ] {
            assert!(!policy.allows_address(ip(refused)), "{refused} allowed");
        }
    }

    #[test]
    fn origin_patterns_match_scheme_host_and_port() {
        let exact: OriginPattern = "https://api.example.com".parse().expect("valid");
        assert!(exact.matches("https", "api.example.com", 443));
        assert!(!exact.matches("http", "api.example.com", 443));
        assert!(!exact.matches("https", "api.example.com", 8443));
        assert!(!exact.matches("https", "evil-api.example.com", 443));
        let wild: OriginPattern = "https://*.example.com".parse().expect("valid");
        assert!(wild.matches("https", "a.b.example.com", 443));
        assert!(
            !wild.matches("https", "example.com", 443),
            "apex is not a subdomain"
        );
        assert!(!wild.matches("https", "badexample.com", 443));
        let range: OriginPattern = "http://127.0.0.1:8000-8099".parse().expect("valid");
        assert!(range.matches("http", "127.0.0.1", 8050));
        assert!(!range.matches("http", "127.0.0.1", 8100));
        let v6: OriginPattern = "http://[::1]:8080".parse().expect("valid");
        assert!(v6.matches("http", "::1", 8080));
        for bad in [
            "ftp://x",
            "https://",
            "https://a/b",
            "https://*",
            "https://a.*.com",
            "http://x:9-1",
            "x",
        ] {
            assert!(bad.parse::<OriginPattern>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn tls_client_config_builds() {
        assert!(tls_config().is_ok());
    }

    #[test]
    fn allowed_private_ranges_are_exceptions_by_cidr() {
        let spec = HttpSpec {
            allow_private: vec!["127.0.0.0/8".into()],
            ..HttpSpec::default()
        };
        let policy = NetPolicy::from_spec(&spec).expect("valid");
        assert!(policy.allows_address(ip("127.0.0.1")));
        assert!(
            policy.allows_address(ip("::ffff:127.0.0.2")),
            "mapped form of an allowed range"
        );
        assert!(!policy.allows_address(ip("10.0.0.1")));
        assert!(!policy.allows_address(ip("::1")));
        let bad = HttpSpec {
            allow_private: vec!["127.0.0.0/33".into()],
            ..HttpSpec::default()
        };
        assert!(matches!(
            NetPolicy::from_spec(&bad),
            Err(NetPolicyError::BadRange(_))
        ));
    }
}

//! Outbound HTTP for tools (wasi:http), deny by default.
//!
//! A request leaves only if its origin (`scheme://host:port`) matches the
//! tool's allowlist. The host then resolves the name itself, refuses every
//! address in a private, loopback, link-local, unique-local, CGNAT,
//! multicast, unspecified or metadata range (IPv4-mapped and NAT64 forms
//! included) unless the policy allows that range explicitly, and connects to
//! the address it checked, so a second lookup cannot rebind the name. TLS
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

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
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
    /// Address ranges (CIDR) that would otherwise be refused as private.
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

/// A policy's `[http]` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetPolicyError {
    /// An `allow` entry is not `scheme://host[:port]`.
    #[error("`http.allow` entry `{0}` is not scheme://host[:port] with scheme http or https")]
    BadOrigin(String),
    /// An `allow_private` entry is not a CIDR range.
    #[error("`http.allow_private` entry `{0}` is not a CIDR range such as 127.0.0.0/8")]
    BadRange(String),
}

/// A resolved `[http]`: the origin patterns, ranges and limits in force.
#[derive(Debug, Clone)]
pub(crate) struct NetPolicy {
    origins: Vec<OriginPattern>,
    allow_private: Vec<Cidr>,
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
            .map(|r| r.parse().map_err(|()| NetPolicyError::BadRange(r.clone())))
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

    fn allows_origin(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.origins.iter().any(|o| o.matches(scheme, host, port))
    }

    fn allows_address(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow_private.iter().any(|c| c.contains(ip))
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

/// An address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, prefix) = s.split_once('/').ok_or(())?;
        let network: IpAddr = addr.parse().map_err(drop)?;
        let prefix: u8 = prefix.parse().map_err(drop)?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(());
        }
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) addresses
/// are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [.., a, b, c, d] = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            ip
        }
        v4 => v4,
    }
}

/// Whether an address is on the public internet: not private, loopback,
/// link-local (cloud metadata lives there), unique-local, CGNAT, multicast,
/// unspecified, broadcast, documentation or reserved.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b)) // CGNAT
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local, incl. fd00:ec2::254
                || (first & 0xffc0) == 0xfe80 // link local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::from([0, 0, 0, 0, 0, 0, 0, 1]))
        }
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
        // Resolve once, check every address, connect to the one checked.
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|_| HttpError::DnsError {
                    rcode: None,
                    info_code: None,
                })?
                .collect(),
        };
        let Some(addr) = addrs
            .iter()
            .copied()
            .find(|a| policy.allows_address(a.ip()))
        else {
            let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            let reason = format!(
                "{origin}: resolves only to non-public addresses ({})",
                shown.join(", ")
            );
            tracing::info!(target: "cofferdam::net", %reason, "outbound request refused");
            counters
                .refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(reason);
            return Err(HttpError::DestinationIpProhibited);
        };
        let _connection = Arc::clone(&policy.connections)
            .acquire_owned()
            .await
            .map_err(|_| HttpError::ConnectionLimitReached)?;
        let tcp = TcpStream::connect(addr).await.map_err(HttpError::Connect)?;
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let io: Box<dyn IoStream> = if tls {
            Box::new(tls_connect(&host, tcp).await?)
        } else {
            Box::new(tcp)
        };
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

trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
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
struct TokioIo(Box<dyn IoStream>);

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

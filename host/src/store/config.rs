//! Which store a host keeps its durable state in: the embedded redb file
//! (the default) or a PostgreSQL database shared by several replicas.
//!
//! Only configuration: nothing here connects; see [`super::postgres`].

use std::time::Duration;

use crate::model::error::JournalError;

/// Where a host keeps its durable state (idempotency keys, budgets, audit
/// history, escalations, tasks, schedules, breaker modes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreConfig {
    /// The embedded redb file in the data directory (in memory without
    /// one): one host, one truth.
    #[default]
    Embedded,
    /// A PostgreSQL database every replica of a deployment points at.
    Postgres(PostgresConfig),
}

impl StoreConfig {
    /// The store a URL names: `postgres://…` or `postgresql://…` (see
    /// [`PostgresConfig::new`]). Anything else is a [`JournalError::BadUrl`]
    /// that names the URL without its password.
    pub fn from_url(url: &str) -> Result<Self, JournalError> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("postgres" | "postgresql") => {
                let config = PostgresConfig::new(url);
                config.driver_config()?;
                Ok(Self::Postgres(config))
            }
            _ => Err(JournalError::BadUrl {
                url: redact(url),
                reason: "only postgres:// and postgresql:// URLs name a shared store".into(),
            }),
        }
    }
}

/// A PostgreSQL store. Defaults:
///
/// | setting | default |
/// |---|---|
/// | [`lease`](Self::lease) | 15 s: a replica that stops heartbeating for this long is dead, its side-effecting keys become unknown and its reservations are reclaimed |
/// | [`pool_size`](Self::pool_size) | 16 connections |
/// | [`connect_timeout`](Self::connect_timeout) | 5 s |
/// | [`statement_timeout`](Self::statement_timeout) | 30 s for any one store operation |
///
/// No TLS: connect over a private network or a local socket.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    pub(crate) url: String,
    pub(crate) lease: Duration,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Duration,
    /// The owner id this store heartbeats (default: this process's).
    pub(crate) owner: Option<String>,
    /// Whether keyed-call writes of concurrent calls share one transaction
    /// (`HostBuilder::group_commit`; on by default).
    pub(crate) group_commit: bool,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("lease", &self.lease)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("group_commit", &self.group_commit)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    /// The database at `url` (`postgres://user[:password]@host[:port]/db`),
    /// with the defaults above.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            lease: Duration::from_secs(15),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            owner: None,
            group_commit: true,
        }
    }

    /// How long this replica's ownership outlives its last heartbeat
    /// (heartbeats come every third of it).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// Connections kept open at most.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Longest wait for a connection to open.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest any one store operation may take before it fails as
    /// unavailable.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// These settings on `other`'s database.
    pub(crate) fn with_url(&self, other: &Self) -> Self {
        Self {
            url: other.url.clone(),
            ..self.clone()
        }
    }

    /// The URL without its password, for messages.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// The driver's parsed configuration, or why the URL is unusable.
    pub(crate) fn driver_config(&self) -> Result<tokio_postgres::Config, JournalError> {
        let mut config: tokio_postgres::Config =
            self.url
                .parse()
                .map_err(|e: tokio_postgres::Error| JournalError::BadUrl {
                    url: self.redacted_url(),
                    reason: e.to_string(),
                })?;
        if config.get_hosts().is_empty() {
            return Err(JournalError::BadUrl {
                url: self.redacted_url(),
                reason: "it names no host".into(),
            });
        }
        config.connect_timeout(self.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.application_name("cofferdam");
        config.options(format!(
            "-c statement_timeout={}",
            self.statement_timeout.as_millis().max(1)
        ));
        Ok(config)
    }
}

/// `url` with any password replaced by `***` (URL form and `password=`
/// key-value form).
pub(crate) fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && let Some((user, _password)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host}{tail}");
        }
        // `?password=…` in the query string.
        if let Some(at) = tail.find("password=") {
            let stop = tail[at..].find('&').map_or(tail.len(), |n| at + n);
            return format!(
                "{scheme}://{authority}{}password=***{}",
                &tail[..at],
                &tail[stop..]
            );
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|part| {
            if part.starts_with("password=") {
                "password=***"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_redacted_urls() {
        assert_eq!(
            redact("postgres://app:s3cret@db.internal:5432/cofferdam"),
            "postgres://app:***@db.internal:5432/cofferdam"
        );
        assert_eq!(
            redact("postgres://app@db/x?sslmode=disable&password=s3cret"),
            "postgres://app@db/x?sslmode=disable&password=***"
        );
        assert_eq!(
            redact("host=db user=app password=s3cret"),
            "host=db user=app password=***"
        );
        assert_eq!(
            redact("postgres://root@127.0.0.1/test"),
            "postgres://root@127.0.0.1/test"
        );
    }

    #[test]
    fn bad_urls_are_named_without_their_password() {
        let error = StoreConfig::from_url("mysql://app:s3cret@db/x").expect_err("refused");
        let message = error.to_string();
        assert!(message.contains("mysql://app:***@db/x"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        let error =
            StoreConfig::from_url("postgres://app:s3cret@db:notaport/x").expect_err("bad port");
        assert!(matches!(error, JournalError::BadUrl { .. }), "{error}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        assert!(matches!(
            StoreConfig::from_url("postgres://root@127.0.0.1/test"),
            Ok(StoreConfig::Postgres(_))
        ));
    }
}

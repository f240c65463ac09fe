//! Who an MCP client is, and what it may do.
//!
//! Over HTTP a client proves who it is with a bearer token
//! (`Authorization: Bearer …`). The host keeps only the token's SHA-256
//! (`[[clients]]` in `cofferdam.toml`, `token_sha256`), compares digests in
//! constant time and never logs a token. The identity a token stands for —
//! its agent and tenant — replaces whatever the request's `_meta` says, so
//! one client cannot spend another's budget or replay another's keys. Over
//! stdio the one local client gets the identity of the `[stdio]` table.
//!
//! A client may call the tools its grant names (all by default) and, when
//! its grant says so, manage schedules, tasks and escalations of its own
//! agent (see [`super::manage`]). Resolving an escalation is a human's
//! decision: a client is offered it only with `resolve_escalations = true`.
//!
//! It is not an OAuth authorization server: tokens are issued by an operator
//! (`cofferdam token`) and rotated by editing the config, which a running
//! `cofferdam serve` reloads.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// What a client may manage besides calling tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Manage {
    /// Create, list, pause, resume and delete its own schedules.
    Schedules,
    /// Start, follow, cancel and list its own background tasks.
    Tasks,
    /// List and read its own escalations.
    Escalations,
}

impl Manage {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedules => "schedules",
            Self::Tasks => "tasks",
            Self::Escalations => "escalations",
        }
    }
}

/// What a client may do: its tools and its management rights.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Tools it may call and see (`"*"`: every loaded tool; the default).
    #[serde(default = "every_tool")]
    pub tools: Vec<String>,
    /// What it may manage (default: nothing).
    #[serde(default)]
    pub manage: BTreeSet<Manage>,
    /// Whether it may resolve its agent's escalations (a human decision;
    /// default no).
    #[serde(default)]
    pub resolve_escalations: bool,
}

fn every_tool() -> Vec<String> {
    vec!["*".to_owned()]
}

impl Default for Grant {
    fn default() -> Self {
        Self {
            tools: every_tool(),
            manage: BTreeSet::new(),
            resolve_escalations: false,
        }
    }
}

impl Grant {
    /// Whether the client may call and see `tool`.
    pub fn may_call(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == "*" || t == tool)
    }

    /// Whether the client may manage `what`.
    pub fn may_manage(&self, what: Manage) -> bool {
        self.manage.contains(&what)
    }
}

/// One `[[clients]]` entry: a bearer token's digest and who it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// A label for logs and errors (never the token).
    pub name: String,
    /// The SHA-256 of the bearer token, 64 hex digits (`cofferdam token`
    /// makes a token and prints this).
    pub token_sha256: String,
    /// The agent the client acts as: the owner of what it creates, the
    /// budget scope it spends.
    pub agent: String,
    /// The tenant it belongs to (its budget scope too), if any.
    #[serde(default)]
    pub tenant: Option<String>,
    /// What it may do.
    #[serde(flatten)]
    pub grant: Grant,
}

/// `[stdio]`: the identity of the one client of `cofferdam serve` over stdio.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioSpec {
    /// The agent the client acts as.
    pub agent: String,
    /// Its tenant, if any.
    #[serde(default)]
    pub tenant: Option<String>,
    /// What it may do.
    #[serde(flatten)]
    pub grant: Grant,
}

/// A client that proved who it is (or the configured stdio client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `[[clients]]` name (`stdio` for the local client).
    pub client: String,
    /// The agent it acts as.
    pub agent: String,
    /// Its tenant.
    pub tenant: Option<String>,
    /// What it may do.
    pub grant: Grant,
}

impl From<&StdioSpec> for Identity {
    fn from(spec: &StdioSpec) -> Self {
        Self {
            client: "stdio".to_owned(),
            agent: spec.agent.clone(),
            tenant: spec.tenant.clone(),
            grant: spec.grant.clone(),
        }
    }
}

/// Why a `[[clients]]` entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `token_sha256` is not 64 hex digits.
    #[error("client `{client}`: token_sha256 must be 64 hex digits (the SHA-256 of the token)")]
    BadDigest {
        /// The client's name.
        client: String,
    },
    /// Two clients have the same token.
    #[error("clients `{first}` and `{second}` have the same token")]
    SameToken {
        /// One client.
        first: String,
        /// The other.
        second: String,
    },
    /// A name or agent is empty, too long or has control characters.
    #[error("client `{client}`: {field} must be 1 to 128 printable characters")]
    BadField {
        /// The client's name.
        client: String,
        /// The field.
        field: &'static str,
    },
}

fn printable(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
}

/// A token's digest, as `token_sha256` holds it.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random bearer token (256 bits, hex) and its `token_sha256`.
pub fn new_token() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = format!("cfd_{}", hex::encode(bytes));
    let digest = hex::encode(token_digest(&token));
    Ok((token, digest))
}

/// The clients allowed over HTTP, by token digest. Cheap to clone; every
/// clone sees [`Clients::replace`], so a reload revokes a removed token for
/// the next request.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    known: Arc<RwLock<Vec<Known>>>,
}

/// A token digest and the identity it stands for.
type Known = ([u8; 32], Identity);

impl Clients {
    /// Checks `specs` and makes them the clients allowed (all or nothing).
    pub fn replace(&self, specs: &[ClientSpec]) -> Result<(), ClientError> {
        let known = Self::parse(specs)?;
        *self.known.write().unwrap_or_else(|e| e.into_inner()) = known;
        Ok(())
    }

    /// Checks `specs` without using them.
    pub fn check(specs: &[ClientSpec]) -> Result<(), ClientError> {
        Self::parse(specs).map(drop)
    }

    fn parse(specs: &[ClientSpec]) -> Result<Vec<Known>, ClientError> {
        let mut known: Vec<Known> = Vec::with_capacity(specs.len());
        for spec in specs {
            for (field, value) in [("name", &spec.name), ("agent", &spec.agent)] {
                if !printable(value) {
                    return Err(ClientError::BadField {
                        client: spec.name.clone(),
                        field,
                    });
                }
            }
            if spec.tenant.as_deref().is_some_and(|t| !printable(t)) {
                return Err(ClientError::BadField {
                    client: spec.name.clone(),
                    field: "tenant",
                });
            }
            let digest = hex::decode(spec.token_sha256.trim())
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .ok_or_else(|| ClientError::BadDigest {
                    client: spec.name.clone(),
                })?;
            if let Some((_, first)) = known.iter().find(|(d, _)| *d == digest) {
                return Err(ClientError::SameToken {
                    first: first.client.clone(),
                    second: spec.name.clone(),
                });
            }
            known.push((
                digest,
                Identity {
                    client: spec.name.clone(),
                    agent: spec.agent.clone(),
                    tenant: spec.tenant.clone(),
                    grant: spec.grant.clone(),
                },
            ));
        }
        Ok(known)
    }

    /// Whether any client is configured (then every HTTP request needs a
    /// token).
    pub fn is_empty(&self) -> bool {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The identity `token` stands for. Every known digest is compared, in
    /// constant time, so the time taken says nothing of which one matched.
    pub fn identify(&self, token: &str) -> Option<Identity> {
        let digest = token_digest(token);
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for (known_digest, identity) in known.iter() {
            if bool::from(known_digest.ct_eq(&digest)) {
                found = Some(identity);
            }
        }
        found.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, token: &str, agent: &str) -> ClientSpec {
        ClientSpec {
            name: name.into(),
            token_sha256: hex::encode(token_digest(token)),
            agent: agent.into(),
            tenant: None,
            grant: Grant::default(),
        }
    }

    #[test]
    fn a_token_stands_for_its_client_and_a_reload_revokes_it() {
        let clients = Clients::default();
        clients
            .replace(&[
                spec("a", "token-a", "agent-a"),
                spec("b", "token-b", "agent-b"),
            ])
            .unwrap();
        assert_eq!(clients.identify("token-a").unwrap().agent, "agent-a");
        assert_eq!(clients.identify("token-b").unwrap().agent, "agent-b");
        assert!(clients.identify("token-c").is_none());
        assert!(clients.identify("").is_none());
        let held = clients.clone();
        clients.replace(&[spec("b", "token-b", "agent-b")]).unwrap();
        assert!(held.identify("token-a").is_none(), "revoked everywhere");
    }

    #[test]
    fn bad_entries_are_refused_by_name_and_nothing_changes() {
        let clients = Clients::default();
        clients.replace(&[spec("a", "token-a", "agent-a")]).unwrap();
        let mut bad = spec("broken", "x", "agent");
        bad.token_sha256 = "abc".into();
        assert_eq!(
            clients.replace(&[bad]).unwrap_err(),
            ClientError::BadDigest {
                client: "broken".into()
            }
        );
        let twice = [spec("one", "same", "a"), spec("two", "same", "b")];
        assert!(matches!(
            Clients::check(&twice),
            Err(ClientError::SameToken { .. })
        ));
        let nameless = spec("", "t", "a");
        assert!(matches!(
            Clients::check(&[nameless]),
            Err(ClientError::BadField { field: "name", .. })
        ));
        assert!(clients.identify("token-a").is_some(), "the old set stays");
    }

    #[test]
    fn new_tokens_match_their_digest() {
        let (token, digest) = new_token().unwrap();
        assert!(token.starts_with("cfd_") && token.len() == 68);
        assert_eq!(digest, hex::encode(token_digest(&token)));
    }

    #[test]
    fn grants_default_to_every_tool_and_no_management() {
        let grant = Grant::default();
        assert!(grant.may_call("anything"));
        assert!(!grant.may_manage(Manage::Schedules));
        let only = Grant {
            tools: vec!["hello".into()],
            ..Grant::default()
        };
        assert!(only.may_call("hello") && !only.may_call("fetch"));
    }
}

//! Who a client of the host's APIs is, and what it may do: the
//! `[[clients]]` and `[stdio]` entries of a config, checked here; the
//! registry that answers a bearer token is `surfaces::mcp::Clients`.
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

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

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

    /// Whether the client may call every tool (`"*"`).
    pub fn may_call_any(&self) -> bool {
        self.tools.iter().any(|t| t == "*")
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
    /// Two clients have the same name (sessions are bound by name).
    #[error("two clients are named `{client}`; names must differ")]
    SameName {
        /// The name.
        client: String,
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

/// A token digest and the identity it stands for.
pub(crate) type Known = ([u8; 32], std::sync::Arc<Identity>);

/// Checks `specs` and pairs each token digest with its identity.
pub(crate) fn parse_clients(specs: &[ClientSpec]) -> Result<Vec<Known>, ClientError> {
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
        if let Some((_, first)) = known.iter().find(|(_, i)| i.client == spec.name) {
            return Err(ClientError::SameName {
                client: first.client.clone(),
            });
        }
        if let Some((_, first)) = known.iter().find(|(d, _)| *d == digest) {
            return Err(ClientError::SameToken {
                first: first.client.clone(),
                second: spec.name.clone(),
            });
        }
        known.push((
            digest,
            std::sync::Arc::new(Identity {
                client: spec.name.clone(),
                agent: spec.agent.clone(),
                tenant: spec.tenant.clone(),
                grant: spec.grant.clone(),
            }),
        ));
    }
    Ok(known)
}

/// The names of the management tools, which no loaded tool may take.
pub(crate) const MANAGEMENT_TOOLS: &[&str] = &[
    "schedule_create",
    "schedule_list",
    "schedule_show",
    "schedule_pause",
    "schedule_resume",
    "schedule_delete",
    "schedule_history",
    "task_start",
    "task_status",
    "task_cancel",
    "task_list",
    "escalation_list",
    "escalation_show",
    "escalation_resolve",
];

/// Whether `name` is a management tool's.
pub(crate) fn is_reserved(name: &str) -> bool {
    MANAGEMENT_TOOLS.contains(&name)
}

//! The registry of HTTP clients: which identity a bearer token stands
//! for ([`crate::model::identity`] holds what an identity is and the
//! config's checks).
//!
//! The host keeps only each token's SHA-256 (`[[clients]]`,
//! `token_sha256`), compares digests in constant time and never logs a
//! token. Reloading the config replaces the set at once for every session.

use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq as _;

pub use crate::model::identity::{
    ClientError, ClientSpec, Grant, Identity, Manage, StdioSpec, new_token, token_digest,
};
use crate::model::identity::{Known, parse_clients};

/// The clients allowed over HTTP, by token digest. Cheap to clone; every
/// clone sees [`Clients::replace`], so a reload revokes a removed token for
/// the next request.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    known: Arc<RwLock<Vec<Known>>>,
    /// Set once any client was configured: from then on a token is needed,
    /// even if a reload empties the list (which then admits nobody).
    required: Arc<std::sync::atomic::AtomicBool>,
}

impl Clients {
    /// Checks `specs` and makes them the clients allowed (all or nothing).
    pub fn replace(&self, specs: &[ClientSpec]) -> Result<(), ClientError> {
        let known = Self::parse(specs)?;
        if !known.is_empty() {
            self.required
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        *self.known.write().unwrap_or_else(|e| e.into_inner()) = known;
        Ok(())
    }

    /// Checks `specs` without using them.
    pub fn check(specs: &[ClientSpec]) -> Result<(), ClientError> {
        Self::parse(specs).map(drop)
    }

    fn parse(specs: &[ClientSpec]) -> Result<Vec<Known>, ClientError> {
        parse_clients(specs)
    }

    /// Whether every HTTP request needs a token: some client is, or once
    /// was, configured (emptying the list by a reload does not turn
    /// authentication off; it admits nobody until a restart).
    pub fn required(&self) -> bool {
        // Set by every `replace` with clients, so no lock is taken here.
        self.required.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether no client is configured now.
    pub fn is_empty(&self) -> bool {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The identity `token` stands for. Every known digest is compared, in
    /// constant time, so the time taken says nothing of which one matched.
    pub fn identify(&self, token: &str) -> Option<Identity> {
        self.identify_shared(token)
            .map(|identity| (*identity).clone())
    }

    /// [`Clients::identify`] without copying the identity (the request
    /// path carries it as an `Arc`).
    pub(crate) fn identify_shared(&self, token: &str) -> Option<Arc<Identity>> {
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
    use crate::model::identity::is_reserved;

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
        // Emptying the list by a reload keeps tokens required.
        clients.replace(&[]).unwrap();
        assert!(held.required() && held.identify("token-b").is_none());
        assert!(!Clients::default().required());
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
        let named_twice = [spec("one", "t1", "a"), spec("one", "t2", "b")];
        assert!(matches!(
            Clients::check(&named_twice),
            Err(ClientError::SameName { .. })
        ));
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
    fn management_tools_take_the_reserved_names() {
        for name in crate::model::identity::MANAGEMENT_TOOLS {
            assert!(super::super::manage::definition(name).is_some(), "{name}");
        }
        assert!(is_reserved("task_status") && !is_reserved("hello"));
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

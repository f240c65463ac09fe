//! Tool state: durable key-value pairs a tool keeps between calls, in a
//! bucket its policy grants, seen through a scope (per owner, per schedule
//! or per tool), under quotas. The rules every store applies live here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Reads of tool state, as a call's bucket needs them (the store
/// implements it).
pub(crate) trait StateReader: Send + Sync {
    /// The value of `key` in `space`.
    fn state_get(
        &self,
        space: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, crate::model::error::JournalError>;

    /// The keys of `space`, in order.
    fn state_keys(&self, space: &str) -> Result<Vec<String>, crate::model::error::JournalError>;

    /// What `space` holds.
    fn state_usage(&self, space: &str) -> Result<StateUsage, crate::model::error::JournalError>;
}

/// Whose state a call of a tool sees in its bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateScope {
    /// One set of keys per calling agent (the default): two agents' runs of
    /// the same tool never see each other's keys.
    #[default]
    Owner,
    /// One set per schedule: the runs of one schedule share it; a call made
    /// outside a schedule cannot open the bucket.
    Schedule,
    /// One set for every call of the tool.
    Tool,
}

impl StateScope {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Schedule => "schedule",
            Self::Tool => "tool",
        }
    }
}

/// `[tools.NAME.state]`: the bucket a tool may use and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    /// The bucket's name (`[a-z0-9_-]`, 1–64); tools granted the same
    /// bucket share it.
    pub bucket: String,
    /// Whose keys a call sees (default `owner`).
    #[serde(default)]
    pub scope: StateScope,
    /// Bytes of keys and values one scope of the bucket may hold (default
    /// 1 MiB).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Keys one scope of the bucket may hold (default 1,000).
    #[serde(default)]
    pub max_keys: Option<u64>,
}

/// Default [`StateSpec::max_bytes`].
pub const DEFAULT_STATE_BYTES: u64 = 1024 * 1024;
/// Default [`StateSpec::max_keys`].
pub const DEFAULT_STATE_KEYS: u64 = 1000;

/// Whether `bucket` is a valid bucket name.
pub(crate) fn valid_bucket(bucket: &str) -> bool {
    !bucket.is_empty()
        && bucket.len() <= 64
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The key space one scope of a bucket is: `BUCKET/tool`,
/// `BUCKET/owner:AGENT` or `BUCKET/schedule:OWNER/NAME`.
pub(crate) fn space(bucket: &str, scope: StateScope, owner: &str) -> String {
    match scope {
        StateScope::Tool => format!("{bucket}/tool"),
        StateScope::Owner => format!("{bucket}/owner:{owner}"),
        StateScope::Schedule => format!("{bucket}/schedule:{owner}"),
    }
}

/// The most a space may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateQuota {
    pub max_keys: u64,
    pub max_bytes: u64,
}

/// What a space holds: keys, and bytes of keys and values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateUsage {
    /// Keys held.
    pub keys: u64,
    /// Bytes of keys and values held.
    pub bytes: u64,
}

/// The bytes one pair counts for.
pub(crate) fn pair_bytes(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// One buffered change of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateWrite {
    Set(Vec<u8>),
    Delete,
    /// Added to the stored counter when committed (so concurrent
    /// increments of two calls both count).
    Add(u64),
}

/// The changes a successful attempt commits, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateChanges {
    pub space: String,
    pub writes: BTreeMap<String, StateWrite>,
    /// `None` for an operator's change, which no quota stops.
    pub quota: Option<StateQuota>,
}

/// Why changes were not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StateRefused {
    #[error(
        "state-quota-exceeded: {space} would hold {keys} keys and {bytes} bytes; the most allowed is {max_keys} keys and {max_bytes} bytes"
    )]
    OverQuota {
        space: String,
        keys: u64,
        bytes: u64,
        max_keys: u64,
        max_bytes: u64,
    },
    #[error("key `{key}` of {space} holds no counter: {reason}")]
    NotACounter {
        space: String,
        key: String,
        reason: String,
    },
}

/// A counter's value: decimal text (absent counts as 0).
pub(crate) fn counter(value: Option<&[u8]>) -> Result<u64, String> {
    match value {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(bytes)
            .map_err(|e| e.to_string())?
            .trim()
            .parse::<u64>()
            .map_err(|e| e.to_string()),
    }
}

/// What `write` makes of a key holding `current`: its new value (`None`:
/// gone).
pub(crate) fn applied(
    current: Option<&[u8]>,
    write: &StateWrite,
) -> Result<Option<Vec<u8>>, String> {
    match write {
        StateWrite::Set(value) => Ok(Some(value.clone())),
        StateWrite::Delete => Ok(None),
        StateWrite::Add(delta) => counter(current)?
            .checked_add(*delta)
            .map(|n| Some(n.to_string().into_bytes()))
            .ok_or_else(|| "the counter would overflow".to_owned()),
    }
}

/// A key's new value (`None`: delete it).
pub(crate) type Put = (String, Option<Vec<u8>>);

/// Applies `changes` to a space through `read` (a key's stored value) and
/// `usage` (what the space holds), checking the quota on what it would hold
/// after: the new values to store (`None`: delete) and the new usage. One
/// rule for every store, applied inside its write transaction.
pub(crate) fn plan(
    changes: &StateChanges,
    usage: StateUsage,
    mut read: impl FnMut(&str) -> Option<Vec<u8>>,
) -> Result<(Vec<Put>, StateUsage), StateRefused> {
    let mut after = usage;
    let mut puts = Vec::with_capacity(changes.writes.len());
    for (key, write) in &changes.writes {
        let current = read(key);
        let new =
            applied(current.as_deref(), write).map_err(|reason| StateRefused::NotACounter {
                space: changes.space.clone(),
                key: key.clone(),
                reason,
            })?;
        if let Some(old) = &current {
            after.keys = after.keys.saturating_sub(1);
            after.bytes = after.bytes.saturating_sub(pair_bytes(key, old));
        }
        if let Some(value) = &new {
            after.keys += 1;
            after.bytes += pair_bytes(key, value);
        }
        puts.push((key.clone(), new));
    }
    if let Some(quota) = changes.quota {
        let grew = after.keys > usage.keys || after.bytes > usage.bytes;
        if grew && (after.keys > quota.max_keys || after.bytes > quota.max_bytes) {
            return Err(StateRefused::OverQuota {
                space: changes.space.clone(),
                keys: after.keys,
                bytes: after.bytes,
                max_keys: quota.max_keys,
                max_bytes: quota.max_bytes,
            });
        }
    }
    Ok((puts, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(writes: &[(&str, StateWrite)], quota: Option<StateQuota>) -> StateChanges {
        StateChanges {
            space: "b/tool".into(),
            writes: writes
                .iter()
                .map(|(k, w)| ((*k).to_owned(), w.clone()))
                .collect(),
            quota,
        }
    }

    #[test]
    fn counters_add_to_what_is_stored_and_refuse_text() {
        let stored = |key: &str| (key == "n").then(|| b"40".to_vec());
        let (puts, usage) = plan(
            &changes(
                &[("n", StateWrite::Add(2)), ("m", StateWrite::Add(1))],
                None,
            ),
            StateUsage { keys: 1, bytes: 3 },
            stored,
        )
        .unwrap();
        assert_eq!(puts[1], ("n".into(), Some(b"42".to_vec())));
        assert_eq!(puts[0], ("m".into(), Some(b"1".to_vec())));
        assert_eq!(usage, StateUsage { keys: 2, bytes: 5 });
        let text = |_: &str| Some(b"hello".to_vec());
        assert!(matches!(
            plan(
                &changes(&[("n", StateWrite::Add(1))], None),
                StateUsage::default(),
                text
            ),
            Err(StateRefused::NotACounter { .. })
        ));
    }

    #[test]
    fn quotas_refuse_growth_beyond_them_but_not_shrinking() {
        let quota = Some(StateQuota {
            max_keys: 2,
            max_bytes: 10,
        });
        let none = |_: &str| None;
        let big = StateWrite::Set(vec![0; 10]);
        assert!(matches!(
            plan(&changes(&[("k", big)], quota), StateUsage::default(), none),
            Err(StateRefused::OverQuota { bytes: 11, .. })
        ));
        // Already over (a quota lowered later): deleting is still allowed.
        let full = |_: &str| Some(vec![0; 20]);
        let (_, after) = plan(
            &changes(&[("k", StateWrite::Delete)], quota),
            StateUsage { keys: 3, bytes: 63 },
            full,
        )
        .unwrap();
        assert_eq!(after, StateUsage { keys: 2, bytes: 42 });
    }
}

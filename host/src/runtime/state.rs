//! `wasi:keyvalue` for tools: the bucket a tool's policy grants, seen
//! through the call's scope, over the host's store.
//!
//! An attempt reads through to the store but writes into a buffer of its
//! own: the buffer is committed (all or nothing, under the quota) only when
//! the attempt succeeds, so a failed attempt's writes never reach the next
//! attempt and a replayed keyed call writes nothing. `increment` is buffered
//! as a delta and added to the stored counter at commit, so the increments
//! of concurrent calls all count. A write that would take the space past
//! its quota fails at once with `other("state-quota-exceeded: …")`.
//!
//! `open("")` opens the tool's granted bucket whatever its name; a tool
//! without a grant gets `access-denied`, another name `no-such-store`.
//!
//! It does not offer `wasi:keyvalue/batch` or watches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use wasmtime::component::{HasData, Resource, ResourceTable};

use crate::model::state::{
    StateChanges, StateQuota, StateReader, StateUsage, StateWrite, applied, counter, pair_bytes,
};
use crate::runtime::bindings::wasi::keyvalue::{atomics, store};
pub(crate) use crate::runtime::bindings::{Bucket, StateError};

/// Keys a `list-keys` page holds at most.
const PAGE: usize = 1000;

/// Longest key, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// One attempt's view of its bucket: reads go to the store, writes to a
/// buffer committed when the attempt succeeds.
pub(crate) struct StateView {
    bucket: String,
    /// `None`: the call has no scope the grant needs (a schedule scope
    /// outside a schedule run); opening is denied.
    space: Option<String>,
    quota: StateQuota,
    store: Arc<dyn StateReader>,
    writes: BTreeMap<String, StateWrite>,
    /// Stored values of the keys written so far (read once).
    stored: HashMap<String, Option<Vec<u8>>>,
    /// What the space would hold with the buffered writes (read when first
    /// written, then kept up to date).
    usage: Option<StateUsage>,
}

impl StateView {
    pub(crate) fn new(
        bucket: String,
        space: Option<String>,
        quota: StateQuota,
        store: Arc<dyn StateReader>,
    ) -> Self {
        Self {
            bucket,
            space,
            quota,
            store,
            writes: BTreeMap::new(),
            stored: HashMap::new(),
            usage: None,
        }
    }

    /// The buffered writes, to commit when the attempt succeeded.
    pub(crate) fn into_changes(self) -> Option<StateChanges> {
        let space = self.space?;
        (!self.writes.is_empty()).then_some(StateChanges {
            space,
            writes: self.writes,
            quota: Some(self.quota),
        })
    }

    fn space(&self) -> Result<&str, StateError> {
        self.space.as_deref().ok_or(StateError::AccessDenied)
    }

    /// The stored value of a key this attempt wrote (read once, kept for
    /// the projection); other keys are read each time, never cached, so a
    /// guest reading many keys does not grow the host's memory.
    fn stored(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(value) = self.stored.get(key) {
            return Ok(value.clone());
        }
        Ok(self.store.state_get(self.space()?, key)?)
    }

    /// The value `key` has for this attempt: its buffered write over what
    /// is stored.
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_key(key)?;
        let stored = self.stored(key)?;
        match self.writes.get(key) {
            None => Ok(stored),
            Some(write) => applied(stored.as_deref(), write).map_err(StateError::Other),
        }
    }

    /// Keys one attempt may change: the quota's keys (a whole rewrite)
    /// plus room for deletes and counters, so a guest cannot grow the
    /// buffer without bound by deleting keys that do not exist.
    fn max_changes(&self) -> usize {
        usize::try_from(self.quota.max_keys.saturating_mul(2).saturating_add(64))
            .unwrap_or(usize::MAX)
    }

    /// Buffers `write`, refusing it when the space would go past its quota
    /// or the attempt changes too many keys. O(1) in the number of keys
    /// written so far: the projection is kept up to date.
    fn write(&mut self, key: String, write: StateWrite) -> Result<(), StateError> {
        check_key(&key)?;
        if !self.writes.contains_key(&key) && self.writes.len() >= self.max_changes() {
            return Err(StateError::Other(format!(
                "state-too-many-writes: one call may change at most {} keys of bucket `{}`",
                self.max_changes(),
                self.bucket
            )));
        }
        if self.usage.is_none() {
            self.usage = Some(self.store.state_usage(self.space()?)?);
        }
        if !self.stored.contains_key(&key) {
            let value = self.store.state_get(self.space()?, &key)?;
            self.stored.insert(key.clone(), value);
        }
        let before_value = self.get(&key)?;
        let stored = self.stored.get(&key).cloned().flatten();
        let after_value = applied(stored.as_deref(), &write).map_err(StateError::Other)?;
        let before = self.usage.unwrap_or_default();
        let mut after = before;
        if let Some(old) = &before_value {
            after.keys = after.keys.saturating_sub(1);
            after.bytes = after.bytes.saturating_sub(pair_bytes(&key, old));
        }
        if let Some(new) = &after_value {
            after.keys += 1;
            after.bytes += pair_bytes(&key, new);
        }
        let grew = after.keys > before.keys || after.bytes > before.bytes;
        if grew && (after.keys > self.quota.max_keys || after.bytes > self.quota.max_bytes) {
            return Err(StateError::Other(format!(
                "state-quota-exceeded: bucket `{}` may hold {} keys and {} bytes; this write would make {} keys and {} bytes",
                self.bucket, self.quota.max_keys, self.quota.max_bytes, after.keys, after.bytes
            )));
        }
        self.usage = Some(after);
        self.writes.insert(key, write);
        Ok(())
    }

    fn list(&mut self, cursor: Option<u64>) -> Result<store::KeyResponse, StateError> {
        let mut keys: BTreeSet<String> =
            self.store.state_keys(self.space()?)?.into_iter().collect();
        for (key, write) in &self.writes {
            match write {
                StateWrite::Delete => keys.remove(key),
                StateWrite::Set(_) | StateWrite::Add(_) => keys.insert(key.clone()),
            };
        }
        let start = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let page: Vec<String> = keys.into_iter().skip(start).take(PAGE + 1).collect();
        let more = page.len() > PAGE;
        let keys: Vec<String> = page.into_iter().take(PAGE).collect();
        let cursor = more.then(|| (start + PAGE) as u64);
        Ok(store::KeyResponse { keys, cursor })
    }
}

/// Refuses a key too long or with control characters (NUL breaks stores).
fn check_key(key: &str) -> Result<(), StateError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StateError::Other(format!(
            "state key of {} bytes: keys are at most {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(StateError::Other(
            "state keys may not hold control characters".to_owned(),
        ));
    }
    Ok(())
}

/// What the `wasi:keyvalue` bindings see of a call: its resource table and
/// its bucket.
pub(crate) struct KeyValue<'a> {
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) state: Option<&'a mut StateView>,
}

/// The [`HasData`] of the `wasi:keyvalue` bindings.
pub(crate) struct KeyValueData;

impl HasData for KeyValueData {
    type Data<'a> = KeyValue<'a>;
}

impl KeyValue<'_> {
    fn state(&mut self) -> Result<&mut StateView, StateError> {
        self.state.as_deref_mut().ok_or(StateError::AccessDenied)
    }
}

impl store::Host for KeyValue<'_> {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, StateError> {
        let view = self.state()?;
        // "" is the tool's own bucket, whatever its name.
        if !identifier.is_empty() && view.bucket != identifier {
            return Err(StateError::NoSuchStore);
        }
        view.space()?;
        Ok(self.table.push(Bucket)?)
    }

    fn convert_error(&mut self, err: StateError) -> wasmtime::Result<store::Error> {
        Ok(match err {
            StateError::NoSuchStore => store::Error::NoSuchStore,
            StateError::AccessDenied => store::Error::AccessDenied,
            StateError::Other(message) => store::Error::Other(message),
        })
    }
}

impl store::HostBucket for KeyValue<'_> {
    fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.table.get(&bucket)?;
        self.state()?.get(&key)
    }

    fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), StateError> {
        self.table.get(&bucket)?;
        self.state()?.write(key, StateWrite::Set(value))
    }

    fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), StateError> {
        self.table.get(&bucket)?;
        self.state()?.write(key, StateWrite::Delete)
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, StateError> {
        self.table.get(&bucket)?;
        Ok(self.state()?.get(&key)?.is_some())
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, StateError> {
        self.table.get(&bucket)?;
        self.state()?.list(cursor)
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KeyValue<'_> {
    fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, StateError> {
        self.table.get(&bucket)?;
        let view = self.state()?;
        let current = view.get(&key)?;
        let now = counter(current.as_deref())
            .map_err(|e| StateError::Other(format!("key `{key}` holds no counter: {e}")))?;
        let value = now
            .checked_add(delta)
            .ok_or_else(|| StateError::Other("the counter would overflow".to_owned()))?;
        let write = match view.writes.get(&key) {
            Some(StateWrite::Set(_) | StateWrite::Delete) => {
                StateWrite::Set(value.to_string().into_bytes())
            }
            Some(StateWrite::Add(added)) => StateWrite::Add(added.saturating_add(delta)),
            None => StateWrite::Add(delta),
        };
        view.write(key, write)?;
        Ok(value)
    }
}

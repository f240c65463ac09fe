//! Background work as MCP resources: an agent's schedules, their run
//! history, its tasks and its escalations (`cofferdam://schedules/{name}`,
//! `…/history`, `cofferdam://escalations/{id}`, …; see
//! [`TEMPLATES`]), readable with the same grants and
//! ownership as the management tools.
//!
//! `resources/subscribe` makes the server watch a resource for the client:
//! when a run ends (the history changes), an escalation opens (the
//! `cofferdam://escalations` list changes) or anything else in it changes,
//! the client gets `notifications/resources/updated` with its URI. The
//! watcher reads each watched resource from the store every
//! [`POLL`] and compares a digest of what it read, so a change made by
//! another replica on the shared store is heard as well as one made here.
//! A resource that is deleted is reported once, as updated.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rmcp::model::ResourceUpdatedNotificationParam;
use rmcp::{Peer, RoleServer};

use serde_json::{Value, json};

use super::identity::{Identity, Manage};
use super::manage::{self, Manager, Refused, schedule_view};
use crate::Host;

/// How often watched resources are read again.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// Most resources one session may watch.
pub(crate) const MAX_PER_SESSION: usize = 256;

/// Most resources watched at once by all sessions: each costs a store read
/// every [`POLL`].
pub(crate) const MAX_WATCHES: usize = 4096;

/// One client's watch on one resource.
struct Watch {
    session: String,
    uri: String,
    identity: Arc<Identity>,
    peer: Peer<RoleServer>,
    /// Digest of what was read last.
    seen: u64,
}

/// The resources clients watch; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Watches {
    inner: Arc<Mutex<WatchState>>,
}

#[derive(Default)]
struct WatchState {
    watches: Vec<Watch>,
    watcher_running: bool,
}

/// Why a subscription was refused.
pub(crate) enum SubscribeError {
    Refused(Refused),
    TooMany,
}

/// A digest of what reading a resource gave (a refusal, such as a deleted
/// schedule's `not-found`, digests as its rule).
fn digest_of(read: &Result<Value, Refused>) -> u64 {
    let mut hasher = DefaultHasher::new();
    match read {
        Ok(value) => value.to_string().hash(&mut hasher),
        Err(refusal) => refusal.rule().hash(&mut hasher),
    }
    hasher.finish()
}

fn digest(host: &Host, identity: &Identity, uri: &str) -> u64 {
    digest_of(&read(host, identity, uri))
}

impl Watches {
    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `uri` for `session` (which must be able to read it now).
    /// Subscribing twice is harmless. Starts the watcher on the current
    /// runtime when it is not running.
    pub(crate) fn subscribe(
        &self,
        host: &Host,
        identity: Arc<Identity>,
        session: String,
        peer: Peer<RoleServer>,
        uri: String,
    ) -> Result<(), SubscribeError> {
        let read = read(host, &identity, &uri);
        let seen = digest_of(&read);
        read.map_err(SubscribeError::Refused)?;
        let mut state = self.state();
        state.watches.retain(|w| !w.peer.is_transport_closed());
        if state
            .watches
            .iter()
            .any(|w| w.session == session && w.uri == uri)
        {
            return Ok(());
        }
        if state.watches.len() >= MAX_WATCHES
            || state
                .watches
                .iter()
                .filter(|w| w.session == session)
                .count()
                >= MAX_PER_SESSION
        {
            return Err(SubscribeError::TooMany);
        }
        state.watches.push(Watch {
            session,
            uri,
            identity,
            peer,
            seen,
        });
        if !std::mem::replace(&mut state.watcher_running, true) {
            tokio::spawn(watch(Arc::downgrade(&self.inner), host.clone()));
        }
        Ok(())
    }

    /// Stops watching `uri` for `session`.
    pub(crate) fn unsubscribe(&self, session: &str, uri: &str) {
        self.state()
            .watches
            .retain(|w| !(w.session == session && w.uri == uri));
    }
}

/// Reads every watched resource each [`POLL`] and tells its client when
/// it changed. Ends when nothing is watched (a new subscription starts it
/// again) or the server is gone.
async fn watch(watches: Weak<Mutex<WatchState>>, host: Host) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(state) = watches.upgrade() else {
            return;
        };
        let targets: Vec<(String, String, Arc<Identity>, u64)> = {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            state.watches.retain(|w| !w.peer.is_transport_closed());
            if state.watches.is_empty() {
                state.watcher_running = false;
                return;
            }
            state
                .watches
                .iter()
                .map(|w| (w.session.clone(), w.uri.clone(), w.identity.clone(), w.seen))
                .collect()
        };
        // Store reads may block (a shared store answers on its own runtime).
        let reader = host.clone();
        let read = tokio::task::spawn_blocking(move || {
            targets
                .into_iter()
                .filter_map(|(session, uri, identity, seen)| {
                    let now = digest(&reader, &identity, &uri);
                    (now != seen).then_some((session, uri, now))
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(changed) = read else {
            continue;
        };
        for (session, uri, now) in changed {
            let peer = {
                let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                let Some(watch) = state
                    .watches
                    .iter_mut()
                    .find(|w| w.session == session && w.uri == uri)
                else {
                    continue;
                };
                watch.seen = now;
                watch.peer.clone()
            };
            let param = ResourceUpdatedNotificationParam::new(uri.clone());
            if let Err(e) = peer.notify_resource_updated(param).await {
                tracing::debug!(%uri, error = %e, "cannot tell a client a resource changed");
            }
        }
    }
}

/// A resource an agent can read (and subscribe to).
pub(crate) struct ResourceEntry {
    pub(crate) uri: String,
    pub(crate) name: String,
    pub(crate) description: &'static str,
}

/// The URI templates of the resources, with what each holds and the grant
/// it needs.
pub(crate) const TEMPLATES: &[(&str, &str, &str, Manage)] = &[
    (
        "cofferdam://schedules",
        "schedules",
        "Your schedules, with state, next run, runs and tokens spent.",
        Manage::Schedules,
    ),
    (
        "cofferdam://schedules/{name}",
        "schedule",
        "One of your schedules: definition, state, next run, runs, failures, tokens.",
        Manage::Schedules,
    ),
    (
        "cofferdam://schedules/{name}/history",
        "schedule-history",
        "The runs of one of your schedules with their cost; updated when a run ends.",
        Manage::Schedules,
    ),
    (
        "cofferdam://escalations",
        "escalations",
        "Your open escalations; updated when one opens or is resolved.",
        Manage::Escalations,
    ),
    (
        "cofferdam://escalations/{id}",
        "escalation",
        "One of your escalations and how it was resolved.",
        Manage::Escalations,
    ),
    (
        "cofferdam://tasks/{id}",
        "task",
        "One of your tasks: state, current step, steps done, tokens spent.",
        Manage::Tasks,
    ),
];

/// The resources `identity` can read now.
pub(crate) fn resources(host: &Host, identity: &Identity) -> Result<Vec<ResourceEntry>, Refused> {
    let manager = Manager::new(host, identity);
    let grant = &identity.grant;
    let mut entries = Vec::new();
    let mut push = |uri: String, name: String, description| {
        entries.push(ResourceEntry {
            uri,
            name,
            description,
        });
    };
    if grant.may_manage(Manage::Schedules) {
        push(
            "cofferdam://schedules".into(),
            "schedules".into(),
            TEMPLATES[0].2,
        );
        for schedule in host.schedules().list(Some(manager.agent()))? {
            let name = &schedule.spec.name;
            push(
                format!("cofferdam://schedules/{name}"),
                format!("schedule {name}"),
                TEMPLATES[1].2,
            );
            push(
                format!("cofferdam://schedules/{name}/history"),
                format!("history of schedule {name}"),
                TEMPLATES[2].2,
            );
        }
    }
    if grant.may_manage(Manage::Escalations) {
        push(
            "cofferdam://escalations".into(),
            "escalations".into(),
            TEMPLATES[3].2,
        );
        for escalation in manager.escalations(false)? {
            push(
                format!("cofferdam://escalations/{}", escalation.id),
                format!("escalation #{}", escalation.id),
                TEMPLATES[4].2,
            );
        }
    }
    if grant.may_manage(Manage::Tasks) {
        for task in host.tasks().list()? {
            if manager.owns_task(&task) {
                push(
                    format!("cofferdam://tasks/{}", task.id),
                    format!("task {}", task.id),
                    TEMPLATES[5].2,
                );
            }
        }
    }
    Ok(entries)
}

/// Whether a refusal means the resource is not there (for this caller).
pub(crate) fn is_missing(refusal: &Refused) -> bool {
    matches!(refusal.rule(), "not-found" | "not-yours" | "not-granted")
}

/// Reads resource `uri` as `identity`.
pub(crate) fn read(host: &Host, identity: &Identity, uri: &str) -> Result<Value, Refused> {
    let manager = Manager::new(host, identity);
    let missing = || manage::refused("not-found", format!("no resource `{uri}`"));
    let need = |what: Manage| {
        if identity.grant.may_manage(what) {
            Ok(())
        } else {
            Err(manage::refused(
                "not-granted",
                format!(
                    "client `{}` may not read {} resources",
                    identity.client,
                    what.as_str()
                ),
            ))
        }
    };
    let path = uri.strip_prefix("cofferdam://").ok_or_else(missing)?;
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["schedules"] => {
            need(Manage::Schedules)?;
            manager.schedule_list()
        }
        ["schedules", name] => {
            need(Manage::Schedules)?;
            Ok(schedule_view(&manager.own_schedule(name)?))
        }
        ["schedules", name, "history"] => {
            need(Manage::Schedules)?;
            manager.schedule_history(name)
        }
        ["escalations"] => {
            need(Manage::Escalations)?;
            Ok(json!({ "escalations": manager.escalations(false)? }))
        }
        ["escalations", id] => {
            need(Manage::Escalations)?;
            let id = id.parse().map_err(|_| missing())?;
            Ok(json!(manager.own_escalation(id)?))
        }
        ["tasks", id] => {
            need(Manage::Tasks)?;
            manager.task_view(&manager.own_task(id)?, true)
        }
        _ => Err(missing()),
    }
}

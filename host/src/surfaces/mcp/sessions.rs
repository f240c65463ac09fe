//! MCP sessions over streamable HTTP, bounded: at most `max` open, and
//! closed once unused — a session not initialized within the init timeout,
//! or with no request, stream or message for the idle timeout. A session
//! with a call running or a stream open (the client's `GET` for
//! notifications) is in use, however long that takes, so a long tool call
//! never loses its session.
//!
//! It wraps rmcp's [`LocalSessionManager`] (which keeps the messages) and
//! does not change how a session works, only how many live and how long.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use rmcp::model::{ClientJsonRpcMessage, ClientNotification, JsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::WorkerTransport;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, LocalSessionWorker, SessionConfig,
};
use rmcp::transport::streamable_http_server::session::{ServerSseMessage, SessionId};
use rmcp::transport::streamable_http_server::{RestoreOutcome, SessionManager};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How many sessions may be open and how long an unused one lives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    pub(crate) max: usize,
    pub(crate) init_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// What is known of one session's use.
#[derive(Debug)]
struct Use {
    /// Requests running and streams open.
    streams: usize,
    /// The last time a message arrived or a stream ended.
    since: Instant,
    /// Whether the client sent `notifications/initialized`.
    initialized: bool,
    /// The client (by `[[clients]]` name) that opened it, when clients
    /// authenticate: only it may use the session.
    client: Option<String>,
}

/// The session manager `StreamableHttpService` runs on.
#[derive(Debug)]
pub(crate) struct Sessions {
    inner: LocalSessionManager,
    limits: SessionLimits,
    state: Mutex<State>,
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionId, Use>,
    /// Sessions being created (counted against the cap already).
    creating: usize,
    reaper_started: bool,
}

/// Why a session was not created.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionsError {
    #[error("{0} MCP sessions are open, the most allowed; close one (DELETE /mcp) or retry later")]
    Full(usize),
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

impl Sessions {
    /// Sessions kept to `limits`; the reaper ends when `stop` is cancelled.
    pub(crate) fn new(limits: SessionLimits, stop: CancellationToken) -> Arc<Self> {
        let mut config = SessionConfig::default();
        // Idle sessions are closed here, where a running call counts as use;
        // rmcp's own timer would close a session in the middle of a long call.
        config.keep_alive = None;
        config.init_timeout = Some(limits.init_timeout);
        let mut inner = LocalSessionManager::default();
        inner.session_config = config;
        Arc::new(Self {
            inner,
            limits,
            state: Mutex::default(),
            stop,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether one more session can be created now (after closing unused
    /// ones). A request that would open one is refused early when not.
    pub(crate) async fn has_room(&self) -> bool {
        if self.open() < self.limits.max {
            return true;
        }
        self.close_unused().await;
        self.open() < self.limits.max
    }

    fn open(&self) -> usize {
        let state = self.state();
        state.sessions.len() + state.creating
    }

    /// Closes every session unused for longer than its timeout.
    async fn close_unused(&self) {
        let now = Instant::now();
        let expired: Vec<SessionId> = self
            .state()
            .sessions
            .iter()
            .filter(|(_, u)| {
                let timeout = if u.initialized {
                    self.limits.idle_timeout
                } else {
                    self.limits.init_timeout
                };
                u.streams == 0 && now.duration_since(u.since) >= timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::debug!(session = %id, "closing an unused MCP session");
            if let Err(e) = self.close_session(&id).await {
                tracing::debug!(session = %id, error = %e, "cannot close an MCP session");
            }
        }
    }

    /// Closes unused sessions every so often, until `stop` or the manager is
    /// dropped.
    fn start_reaper(self: &Arc<Self>) {
        let every = (self.limits.init_timeout.min(self.limits.idle_timeout) / 2)
            .max(Duration::from_millis(100));
        let manager: Weak<Self> = Arc::downgrade(self);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                manager.close_unused().await;
            }
        });
    }

    /// Whether `client` may open one more session (after closing unused
    /// ones): it holds fewer than `max`.
    pub(crate) async fn has_room_for(&self, client: &str, max: usize) -> bool {
        if self.held_by(client) < max {
            return true;
        }
        self.close_unused().await;
        self.held_by(client) < max
    }

    fn held_by(&self, client: &str) -> usize {
        self.state()
            .sessions
            .values()
            .filter(|u| u.client.as_deref() == Some(client))
            .count()
    }

    /// Binds session `id` to the client that opened it.
    pub(crate) fn bind(&self, id: &str, client: &str) {
        if let Some(u) = self.state().sessions.get_mut(id) {
            u.client.get_or_insert_with(|| client.to_owned());
        }
    }

    /// Whether `client` may use session `id`: it opened it, or the session
    /// is not bound (unknown ids are left to the session manager's 404).
    pub(crate) fn may_use(&self, id: &str, client: &str) -> bool {
        self.state()
            .sessions
            .get(id)
            .and_then(|u| u.client.as_deref())
            .is_none_or(|owner| owner == client)
    }

    fn touch(&self, id: &SessionId, initialized: bool) {
        if let Some(u) = self.state().sessions.get_mut(id) {
            u.since = Instant::now();
            u.initialized |= initialized;
        }
    }

    /// Counts `stream` as use of session `id` until it ends or is dropped.
    fn track<S>(self: &Arc<Self>, id: &SessionId, stream: S) -> Tracked
    where
        S: Stream<Item = ServerSseMessage> + Send + Sync + 'static,
    {
        if let Some(u) = self.state().sessions.get_mut(id) {
            u.streams += 1;
            u.since = Instant::now();
        }
        Tracked {
            stream: Box::pin(stream),
            _in_use: InUse {
                sessions: Arc::downgrade(self),
                id: id.clone(),
            },
        }
    }
}

/// A session's stream, counted as use while it lives.
pub(crate) struct Tracked {
    stream: Pin<Box<dyn Stream<Item = ServerSseMessage> + Send + Sync>>,
    _in_use: InUse,
}

impl Stream for Tracked {
    type Item = ServerSseMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

struct InUse {
    sessions: Weak<Sessions>,
    id: SessionId,
}

impl Drop for InUse {
    fn drop(&mut self) {
        if let Some(sessions) = self.sessions.upgrade()
            && let Some(u) = sessions.state().sessions.get_mut(&self.id)
        {
            u.streams = u.streams.saturating_sub(1);
            u.since = Instant::now();
        }
    }
}

/// `Arc<Sessions>` is the manager, so streams can hold a weak reference.
pub(crate) struct Manager(pub(crate) Arc<Sessions>);

impl SessionManager for Manager {
    type Error = SessionsError;
    type Transport = WorkerTransport<LocalSessionWorker>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let sessions = &self.0;
        if !sessions.has_room().await {
            return Err(SessionsError::Full(sessions.limits.max));
        }
        {
            let mut state = sessions.state();
            if state.sessions.len() + state.creating >= sessions.limits.max {
                return Err(SessionsError::Full(sessions.limits.max));
            }
            state.creating += 1;
            if !std::mem::replace(&mut state.reaper_started, true) {
                sessions.start_reaper();
            }
        }
        let created = sessions.inner.create_session().await;
        let mut state = sessions.state();
        state.creating -= 1;
        let (id, transport) = created?;
        state.sessions.insert(
            id.clone(),
            Use {
                streams: 0,
                since: Instant::now(),
                initialized: false,
                client: None,
            },
        );
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.0.touch(id, false);
        Ok(self.0.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.0.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.0.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.0.inner.create_stream(id, message).await?;
        Ok(self.0.track(id, stream))
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        let initialized = matches!(
            &message,
            JsonRpcMessage::Notification(n)
                if matches!(n.notification, ClientNotification::InitializedNotification(_))
        );
        self.0.touch(id, initialized);
        Ok(self.0.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.0.inner.create_standalone_stream(id).await?;
        Ok(self.0.track(id, stream))
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.0.inner.resume(id, last_event_id).await?;
        Ok(self.0.track(id, stream))
    }

    async fn restore_session(
        &self,
        _id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        // No external session store: a session lives in this process only.
        Ok(RestoreOutcome::NotSupported)
    }
}

impl Sessions {
    async fn close_session(&self, id: &SessionId) -> Result<(), SessionsError> {
        self.state().sessions.remove(id);
        Ok(self.inner.close_session(id).await?)
    }
}

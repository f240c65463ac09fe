//! A call's progress reports, forwarded to the MCP client that asked for
//! them (`_meta.progressToken`) as `notifications/progress`.

use std::sync::{Arc, Mutex};

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};

use crate::{CallRequest, Progress};

/// Progress reports waiting for the client, at most: when a tool reports
/// faster than the client reads, the oldest waiting report is dropped, never
/// the latest one (so the final report always arrives).
const PROGRESS_QUEUE: usize = 64;

/// The reports of one call waiting to be sent.
#[derive(Default)]
struct Reports {
    waiting: Mutex<(std::collections::VecDeque<Progress>, bool)>,
    ready: tokio::sync::Notify,
}

impl Reports {
    fn lock(&self) -> std::sync::MutexGuard<'_, (std::collections::VecDeque<Progress>, bool)> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks the call done when the host drops its progress sink.
struct CallDone(Arc<Reports>);

impl Drop for CallDone {
    fn drop(&mut self) {
        self.0.lock().1 = true;
        self.0.ready.notify_one();
    }
}

/// Sends the call's progress reports to the client, in order, on a bounded
/// queue that drops the oldest report when full. The returned task ends
/// once the call (holding the sink) is done and every waiting report is
/// sent.
pub(super) fn forward(
    peer: Peer<RoleServer>,
    token: ProgressToken,
    request: &mut CallRequest,
) -> tokio::task::JoinHandle<()> {
    let reports = Arc::new(Reports::default());
    let done = CallDone(Arc::clone(&reports));
    request.progress = Some(Arc::new(move |progress: &Progress| {
        let reports = &done.0;
        let mut waiting = reports.lock();
        if waiting.0.len() == PROGRESS_QUEUE {
            waiting.0.pop_front();
        }
        waiting.0.push_back(progress.clone());
        drop(waiting);
        reports.ready.notify_one();
    }));
    tokio::spawn(async move {
        loop {
            let (batch, done) = {
                let mut waiting = reports.lock();
                (std::mem::take(&mut waiting.0), waiting.1)
            };
            for progress in batch {
                if !send_progress(&peer, &token, progress).await {
                    return;
                }
            }
            if done {
                // Reports are only added before the call is done, and all
                // of them were taken with this batch.
                return;
            }
            reports.ready.notified().await;
        }
    })
}

/// Sends one report; `false` when the client is gone.
async fn send_progress(peer: &Peer<RoleServer>, token: &ProgressToken, progress: Progress) -> bool {
    #[expect(clippy::cast_precision_loss, reason = "progress is approximate")]
    let mut param = ProgressNotificationParam::new(token.clone(), progress.done as f64);
    if let Some(total) = progress.total {
        #[expect(clippy::cast_precision_loss, reason = "progress is approximate")]
        let total = total as f64;
        param = param.with_total(total);
    }
    if !progress.message.is_empty() {
        param = param.with_message(progress.message);
    }
    peer.notify_progress(param).await.is_ok()
}

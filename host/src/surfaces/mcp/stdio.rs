//! The MCP stdio transport: one JSON-RPC message per line on stdin and
//! stdout, held to what a server owes a client it cannot trust.
//!
//! - Backpressure: at most [`MAX_UNANSWERED`] requests are read and not yet
//!   answered (the answer written to stdout). A client that sends requests
//!   without reading the answers stops being read, so its next writes block
//!   instead of the server buffering every answer.
//! - End of input cancels the calls still running (the client is gone or
//!   shutting down, per the MCP lifecycle); their answers are still written.
//! - Notifications and responses that arrive before `initialize` are logged
//!   and dropped instead of ending the session.
//! - A line longer than [`MAX_LINE`] bytes, JSON nested deeper than
//!   serde_json's limit (128), and JSON that is no JSON-RPC message are
//!   answered with an error (`-32600`, with the request's `id` when it can be
//!   read from the line's start). Bytes that are not JSON at all are ignored,
//!   as the other MCP SDKs do, so two peers cannot echo errors at each other.
//!
//! It does not frame messages any other way (no `Content-Length` headers).

use std::collections::HashSet;
use std::os::fd::AsFd as _;
use std::sync::{Arc, Mutex};

use rmcp::RoleServer;
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, ErrorData, JsonRpcMessage, RequestId,
    ServerJsonRpcMessage,
};
use rmcp::transport::Transport;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::call_line;

/// The longest line (one message) read, in bytes: 16 MiB.
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;

/// Bytes read from stdin at once: a pipe's default capacity, so a large
/// message takes a read per pipe-full instead of one per 8 KiB.
const READ_BUFFER: usize = 64 * 1024;

/// The largest line and answer buffers kept for reuse between messages.
const KEPT_BUFFER: usize = 4 * 1024 * 1024;

/// Requests read and not yet answered before the server stops reading.
pub(crate) const MAX_UNANSWERED: usize = 128;

/// How much of an oversized line is kept to find its `id`.
const ID_PREFIX: usize = 4096;

/// Requests read and not yet answered: one slot each.
struct Unanswered {
    slots: Semaphore,
    ids: Mutex<HashSet<RequestId>>,
}

impl Unanswered {
    /// Frees the slot of `id` if it holds one; the answer is out or dropped.
    fn answered(&self, id: &RequestId) {
        let held = self
            .ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if held {
            self.slots.add_permits(1);
        }
    }
}

/// The file status flags stdin and stdout had when the server started,
/// put back when this is dropped: a pipe made non-blocking is non-blocking
/// for every process that shares it (a wrapper script, the next command
/// of a shell pipeline).
pub(crate) struct RestoreFlags {
    stdin: Option<rustix::fs::OFlags>,
    stdout: Option<rustix::fs::OFlags>,
}

impl RestoreFlags {
    pub(crate) fn save() -> Self {
        Self {
            stdin: rustix::fs::fcntl_getfl(std::io::stdin()).ok(),
            stdout: rustix::fs::fcntl_getfl(std::io::stdout()).ok(),
        }
    }

    fn restore_stdin(&self) {
        if let Some(flags) = self.stdin {
            let _ = rustix::fs::fcntl_setfl(std::io::stdin(), flags);
        }
    }

    fn restore_stdout(&self) {
        if let Some(flags) = self.stdout {
            let _ = rustix::fs::fcntl_setfl(std::io::stdout(), flags);
        }
    }
}

impl Drop for RestoreFlags {
    fn drop(&mut self) {
        self.restore_stdin();
        self.restore_stdout();
    }
}

/// Standard input as an async reader: a non-blocking pipe when it is one,
/// read on the runtime's own threads; otherwise (a terminal, a file, a
/// socket) tokio's stdin, which reads on a blocking thread and hands every
/// chunk across threads.
pub(crate) fn stdin(saved: &RestoreFlags) -> Box<dyn AsyncRead + Unpin + Send> {
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(tokio::net::unix::pipe::Receiver::from_file);
    match pipe {
        Ok(pipe) => Box::new(pipe),
        Err(_) => {
            // Blocking reads again, in case the attempt left it non-blocking.
            saved.restore_stdin();
            Box::new(tokio::io::stdin())
        }
    }
}

/// Standard output as an async writer: a non-blocking pipe when it is one
/// (see [`stdin`]), otherwise tokio's stdout.
pub(crate) fn stdout(saved: &RestoreFlags) -> Box<dyn AsyncWrite + Unpin + Send> {
    let pipe = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(tokio::net::unix::pipe::Sender::from_file);
    match pipe {
        Ok(pipe) => Box::new(pipe),
        Err(_) => {
            saved.restore_stdout();
            Box::new(tokio::io::stdout())
        }
    }
}

/// The transport over `reader` (stdin) and `writer` (stdout).
pub(crate) struct StdioTransport<R, W> {
    reader: BufReader<R>,
    line: Vec<u8>,
    /// Set while the rest of an oversized line is skipped; the line's start,
    /// kept to find its `id`, is in `line`.
    discarding: bool,
    writer: Arc<tokio::sync::Mutex<Writer<W>>>,
    unanswered: Arc<Unanswered>,
    initialize_seen: bool,
    input_closed: CancellationToken,
}

/// What one bounded line read produced.
enum Line {
    /// A whole line is in `line`.
    Complete,
    /// A line longer than [`MAX_LINE`] ended (or input ended inside it); its
    /// start is in `line`.
    Oversized,
    /// Input ended.
    End,
}

impl<R, W> StdioTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// A transport that cancels `input_closed` when input ends.
    pub(crate) fn new(reader: R, writer: W, input_closed: CancellationToken) -> Self {
        Self {
            reader: BufReader::with_capacity(READ_BUFFER, reader),
            line: Vec::new(),
            discarding: false,
            writer: Arc::new(tokio::sync::Mutex::new(Writer {
                out: writer,
                buffer: Vec::new(),
            })),
            unanswered: Arc::new(Unanswered {
                slots: Semaphore::new(MAX_UNANSWERED),
                ids: Mutex::default(),
            }),
            initialize_seen: false,
            input_closed,
        }
    }

    /// Reads up to the next newline without holding more than [`MAX_LINE`]
    /// bytes. Cancel-safe: a partial line stays in `self.line` for the next
    /// call (the service loop polls `receive` inside a `select!`).
    async fn read_line(&mut self) -> std::io::Result<Line> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if self.discarding {
                    self.discarding = false;
                    return Ok(Line::Oversized);
                }
                return Ok(Line::End);
            }
            let newline = memchr::memchr(b'\n', available);
            let take = newline.map_or(available.len(), |at| at + 1);
            if self.discarding {
                let room = ID_PREFIX.saturating_sub(self.line.len()).min(take);
                self.line.extend_from_slice(&available[..room]);
            } else if self.line.len() + take > MAX_LINE {
                self.line.truncate(ID_PREFIX);
                let room = ID_PREFIX.saturating_sub(self.line.len()).min(take);
                self.line.extend_from_slice(&available[..room]);
                self.discarding = true;
            } else {
                self.line.extend_from_slice(&available[..take]);
            }
            self.reader.consume(take);
            if newline.is_some() {
                if std::mem::take(&mut self.discarding) {
                    return Ok(Line::Oversized);
                }
                return Ok(Line::Complete);
            }
        }
    }

    /// Parses the complete line in `self.line`: the message, or why it is
    /// refused (with the `id` to answer), or nothing to answer.
    fn parse_line(&mut self) -> Result<ClientJsonRpcMessage, Option<(Option<RequestId>, String)>> {
        let parsed = Self::parse(trim_line(&self.line));
        // The buffer is kept for the next line (growing it again for every
        // large message costs copies and page faults), unless it grew large.
        self.line.clear();
        if self.line.capacity() > KEPT_BUFFER {
            self.line = Vec::new();
        }
        parsed
    }

    /// The message in `text`, or why it is refused, or nothing to answer.
    fn parse(text: &[u8]) -> Result<ClientJsonRpcMessage, Option<(Option<RequestId>, String)>> {
        if text.is_empty() {
            return Err(None);
        }
        if let Some(call) = call_line::tools_call(text) {
            return Ok(call);
        }
        let error = match serde_json::from_slice::<ClientJsonRpcMessage>(text) {
            Ok(message) => return Ok(message),
            Err(e) => e,
        };
        if error.to_string().starts_with("recursion limit exceeded") {
            let why = "message is nested more than 128 levels deep".to_owned();
            return Err(Some((top_level_id(text), why)));
        }
        if error.is_syntax() || error.is_eof() {
            tracing::debug!(%error, "ignoring a line that is not JSON");
            return Err(None);
        }
        let value: Option<serde_json::Value> = serde_json::from_slice(text).ok();
        let id = value.as_ref().and_then(|v| v.get("id"));
        let method = value.as_ref().and_then(|v| v.get("method")?.as_str());
        if id.is_none() && method.is_some() {
            // A malformed or unknown notification: nobody waits for an
            // answer, and answering a notification is not allowed.
            tracing::debug!(%error, ?method, "ignoring a notification");
            return Err(None);
        }
        let id = id.and_then(|id| serde_json::from_value(id.clone()).ok());
        Err(Some((id, format!("not a JSON-RPC message: {error}"))))
    }

    /// Answers a line that is no valid request with `-32600`, without
    /// waiting for the write. The answer keeps the line's slot until it is
    /// out, so a flood of bad lines is held back like a flood of requests.
    fn refuse(&self, permit: SemaphorePermit<'_>, id: Option<RequestId>, why: &str) {
        tracing::warn!(?id, why, "invalid message on stdin");
        permit.forget();
        let message =
            ServerJsonRpcMessage::error(ErrorData::invalid_request(why.to_owned(), None), id);
        let write = write_message(Arc::clone(&self.writer), message);
        let unanswered = Arc::clone(&self.unanswered);
        tokio::spawn(async move {
            if let Err(e) = write.await {
                tracing::debug!(error = %e, "cannot write an error answer");
            }
            unanswered.slots.add_permits(1);
        });
    }
}

impl<R, W> Transport<RoleServer> for StdioTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let id = match &item {
            JsonRpcMessage::Response(response) => Some(response.id.clone()),
            JsonRpcMessage::Error(error) => error.id.clone(),
            _ => None,
        };
        let write = write_message(Arc::clone(&self.writer), item);
        let unanswered = Arc::clone(&self.unanswered);
        async move {
            let written = write.await;
            if let Some(id) = id {
                unanswered.answered(&id);
            }
            written
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        let unanswered = Arc::clone(&self.unanswered);
        loop {
            // Backpressure: nothing is read while too many answers are
            // pending. Cancel-safe: a permit dropped unused goes back.
            let permit = unanswered.slots.acquire().await.ok()?;
            let line = match self.read_line().await {
                Ok(line) => line,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read stdin");
                    Line::End
                }
            };
            let message = match line {
                Line::End => {
                    self.input_closed.cancel();
                    return None;
                }
                Line::Oversized => {
                    let start = std::mem::take(&mut self.line);
                    self.refuse(
                        permit,
                        top_level_id(trim_line(&start)),
                        &format!("message is longer than {MAX_LINE} bytes"),
                    );
                    continue;
                }
                Line::Complete => match self.parse_line() {
                    Ok(message) => message,
                    Err(Some((id, why))) => {
                        self.refuse(permit, id, &why);
                        continue;
                    }
                    Err(None) => continue,
                },
            };
            match &message {
                JsonRpcMessage::Request(request) => {
                    if matches!(request.request, ClientRequest::InitializeRequest(_)) {
                        self.initialize_seen = true;
                    }
                    let new = unanswered
                        .ids
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(request.id.clone());
                    if new {
                        // Its answer gives the slot back.
                        permit.forget();
                    }
                }
                _ if !self.initialize_seen => {
                    tracing::warn!(
                        ?message,
                        "ignoring a notification or response sent before initialize"
                    );
                    continue;
                }
                JsonRpcMessage::Notification(notification) => {
                    // A cancelled request is never answered: free its slot.
                    if let ClientNotification::CancelledNotification(cancelled) =
                        &notification.notification
                        && let Some(id) = &cancelled.params.request_id
                    {
                        unanswered.answered(id);
                    }
                }
                _ => {}
            }
            return Some(message);
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.writer.lock().await.out.flush().await
    }
}

/// Standard output and the buffer answers are serialized into, reused
/// from one answer to the next.
struct Writer<W> {
    out: W,
    buffer: Vec<u8>,
}

/// Writes `message` as one line. The returned future owns everything it
/// needs, so a caller may spawn it.
async fn write_message<W>(
    writer: Arc<tokio::sync::Mutex<Writer<W>>>,
    message: ServerJsonRpcMessage,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut writer = writer.lock().await;
    let Writer { out, buffer } = &mut *writer;
    buffer.clear();
    let written = match serde_json::to_writer(&mut *buffer, &message) {
        Ok(()) => {
            buffer.push(b'\n');
            match out.write_all(buffer).await {
                Ok(()) => out.flush().await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(std::io::Error::other(e)),
    };
    if buffer.capacity() > KEPT_BUFFER {
        *buffer = Vec::new();
    }
    written
}

/// A line without its newline, carriage return and byte order mark.
fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    line.trim_ascii()
}

/// The `id` of a JSON object, read from the object's start without parsing
/// the rest, so a message too large or too deep to parse can still be
/// answered. `None` when the id is not among the keys in `text`.
pub(crate) fn top_level_id(text: &[u8]) -> Option<RequestId> {
    let mut at = skip_space(text, 0);
    if text.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_space(text, at);
        let key_end = string_end(text, at)?;
        let key = &text[at..key_end];
        at = skip_space(text, key_end);
        if text.get(at) != Some(&b':') {
            return None;
        }
        at = skip_space(text, at + 1);
        let value_end = value_end(text, at)?;
        if key == b"\"id\"" {
            return serde_json::from_slice(&text[at..value_end]).ok();
        }
        at = skip_space(text, value_end);
        if text.get(at) != Some(&b',') {
            return None;
        }
        at += 1;
    }
}

fn skip_space(text: &[u8], mut at: usize) -> usize {
    while text.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// The index after the JSON string starting at `at`.
fn string_end(text: &[u8], at: usize) -> Option<usize> {
    if text.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        match text.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The index after the JSON value starting at `at`; nesting is counted,
/// not recursed into, so depth costs nothing. `None` when `text` ends first.
fn value_end(text: &[u8], at: usize) -> Option<usize> {
    match text.get(at)? {
        b'"' => string_end(text, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match text.get(i)? {
                    b'"' => {
                        i = string_end(text, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let len = text[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())?;
            Some(at + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::top_level_id;
    use rmcp::model::RequestId;

    #[test]
    fn the_id_is_read_from_the_start_of_an_object() {
        let id = |text: &str| top_level_id(text.as_bytes());
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","id":7,"method":"x"}"#),
            Some(RequestId::Number(7))
        );
        assert_eq!(
            id(r#" { "method" : "a\"}" , "params":{"x":[1,{"id":2}]}, "id" : "k-1" "#),
            Some(RequestId::String("k-1".into()))
        );
        let deep = format!(
            r#"{{"params":{}{}, "id": 3}}"#,
            "[".repeat(500),
            "]".repeat(500)
        );
        assert_eq!(id(&deep), Some(RequestId::Number(3)));
        // Cut before the id, or no object at all.
        assert_eq!(id(r#"{"params":{"a":"#), None);
        assert_eq!(id(r#"[1,2]"#), None);
        assert_eq!(id(r#"{"jsonrpc":"2.0","method":"x"}"#), None);
    }
}

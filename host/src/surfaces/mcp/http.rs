//! The HTTP gate in front of MCP: bearer tokens (with the session a client
//! opened bound to it) and the cap on open sessions.

use std::sync::Arc;

use serde_json::json;

use super::identity::Clients;
use super::sessions;

/// Lets a request through only with a bearer token of a known client (when
/// any is configured), carrying its [`Identity`] to the handlers; answers
/// `401` with `WWW-Authenticate` (RFC 6750) otherwise. A session belongs to
/// the client that opened it: another client's token on it is `403`.
pub(super) async fn authenticate(
    clients: Clients,
    sessions: Arc<sessions::Sessions>,
    per_client: usize,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse as _;
    if !clients.required() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let identity = presented.and_then(|token| clients.identify_shared(token));
    if let Some(identity) = identity {
        let session = request
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(id) = &session
            && !sessions.may_use(id, &identity.client)
        {
            let body = json!({
                "jsonrpc": "2.0",
                "error": {
                    "code": -32001,
                    "message": "this MCP session belongs to another client; initialize your own",
                },
            });
            return (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "application/json".to_owned())],
                body.to_string(),
            )
                .into_response();
        }
        let opens = session.is_none() && request.method() == axum::http::Method::POST;
        if opens && !sessions.has_room_for(&identity.client, per_client).await {
            let body = json!({
                "jsonrpc": "2.0",
                "error": {
                    "code": -32000,
                    "message": format!(
                        "client `{}` holds {per_client} MCP sessions, the most one client may; \
                         close one (DELETE /mcp) or reuse it",
                        identity.client
                    ),
                },
            });
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::CONTENT_TYPE, "application/json".to_owned())],
                body.to_string(),
            )
                .into_response();
        }
        let client = identity.client.clone();
        request.extensions_mut().insert(identity);
        let response = next.run(request).await;
        if session.is_none()
            && let Some(id) = response
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
        {
            sessions.bind(id, &client);
        }
        return response;
    }
    let (challenge, message) = if presented.is_some() {
        (
            r#"Bearer realm="cofferdam", error="invalid_token", error_description="unknown or revoked token""#,
            "the bearer token is unknown or revoked",
        )
    } else {
        (
            r#"Bearer realm="cofferdam""#,
            "a bearer token is required (Authorization: Bearer TOKEN)",
        )
    };
    let body = json!({
        "jsonrpc": "2.0",
        "error": { "code": -32001, "message": message },
    });
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, challenge.to_owned()),
            (header::CONTENT_TYPE, "application/json".to_owned()),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Answers `503` to a request that would open a session (a POST without
/// `Mcp-Session-Id`) while every session allowed is in use.
pub(super) async fn refuse_beyond_session_cap(
    sessions: Arc<sessions::Sessions>,
    retry_after: u64,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{Method, StatusCode, header};
    use axum::response::IntoResponse as _;
    let opens_session =
        request.method() == Method::POST && !request.headers().contains_key("mcp-session-id");
    if opens_session && !sessions.has_room().await {
        let body = json!({
            "jsonrpc": "2.0",
            "error": {
                "code": -32000,
                "message": "too many MCP sessions are open; close an unused one (DELETE /mcp) \
                            or retry later",
            },
        });
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::RETRY_AFTER, retry_after.to_string()),
                (header::CONTENT_TYPE, "application/json".to_owned()),
            ],
            body.to_string(),
        )
            .into_response();
    }
    next.run(request).await
}

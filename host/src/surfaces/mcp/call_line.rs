//! The common stdio message, `tools/call`, read without rmcp's general
//! parse, and its arguments handed on as the client's own JSON text.
//!
//! rmcp reads a message as an untagged enum: serde buffers the whole message
//! (every string copied and unescaped) and tries it against each request
//! type in turn. For a small call that is ~3 µs of a ~100 µs round trip; for
//! a 1 MiB argument it is several copies of the argument, and the handler
//! then printed the parsed arguments back to JSON for the guest.
//!
//! [`tools_call`] reads a `tools/call` request straight into the request
//! rmcp would have produced (the same fields, `_meta` moved into the
//! request's extensions as rmcp does), with its `arguments` kept as the
//! validated text of the line ([`RawArguments`]). Anything it does not
//! recognize, including every line rmcp would refuse, goes to rmcp's own
//! parse, so errors and unusual messages are answered as before.

use rmcp::model::{
    CallToolRequest, CallToolRequestMethod, CallToolRequestParams, ClientJsonRpcMessage,
    ClientRequest, InputResponses, JsonObject, JsonRpcMessage, JsonRpcRequest, JsonRpcVersion2_0,
    RequestId, RequestMetaObject,
};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A `tools/call`'s arguments as the client wrote them: a JSON object,
/// validated by the transport's parse. Carried in the request's extensions;
/// the request's own `arguments` are then `None`.
#[derive(Debug, Clone)]
pub(crate) struct RawArguments(pub(crate) String);

/// The line's top level. `result` and `error` are read only to refuse a
/// request that carries them, as rmcp does (its issue #1283).
#[derive(Deserialize)]
struct CallLine<'a> {
    jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    /// Only `tools/call` reads.
    #[serde(rename = "method")]
    _method: CallToolRequestMethod,
    #[serde(borrow)]
    params: Params<'a>,
    #[serde(default)]
    result: Present,
    #[serde(default)]
    error: Present,
}

/// `CallToolRequestParams`, field for field, with `arguments` unparsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params<'a> {
    #[serde(rename = "_meta", default)]
    meta: Option<JsonObject>,
    name: String,
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(default)]
    input_responses: Option<InputResponses>,
    #[serde(default)]
    request_state: Option<String>,
}

/// Whether a key was in the object at all, whatever its value.
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Present(true))
    }
}

/// How deep `arguments` may nest: serde_json refuses a document nested 128
/// levels deep, and the message and its `params` are two of them.
const MAX_ARGUMENTS_DEPTH: usize = 125;

/// Whether valid JSON `text` nests arrays and objects at most `max` deep.
/// Strings are skipped with `memchr`, so long ones cost little.
fn nests_at_most(text: &str, max: usize) -> bool {
    let bytes = text.as_bytes();
    let (mut at, mut depth) = (0, 0usize);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => loop {
                // Inside a string: to its closing quote, over escapes.
                at += 1;
                let Some(rest) = bytes.get(at..) else {
                    return true;
                };
                match memchr::memchr2(b'"', b'\\', rest) {
                    Some(found) if bytes[at + found] == b'\\' => at += found + 1,
                    Some(found) => {
                        at += found;
                        break;
                    }
                    None => return true,
                }
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    true
}

/// The `tools/call` request in `text`, or `None` for any other line (which
/// then goes to rmcp's parse).
pub(crate) fn tools_call(text: &[u8]) -> Option<ClientJsonRpcMessage> {
    let line: CallLine<'_> = serde_json::from_slice(text).ok()?;
    if line.result.0 || line.error.0 {
        return None;
    }
    let Params {
        meta,
        name,
        arguments,
        input_responses,
        request_state,
    } = line.params;
    // rmcp wants an object (or nothing); anything else is its refusal. A
    // raw value is read without serde_json's nesting limit, so the limit
    // the rest of the line was read under is checked here.
    let arguments = match arguments {
        Some(raw) if raw.get() == "null" => None,
        Some(raw)
            if raw.get().starts_with('{') && nests_at_most(raw.get(), MAX_ARGUMENTS_DEPTH) =>
        {
            Some(RawArguments(raw.get().to_owned()))
        }
        Some(_) => return None,
        None => None,
    };
    let mut params = CallToolRequestParams::new(name);
    params.input_responses = input_responses;
    params.request_state = request_state;
    let mut request = CallToolRequest::new(params);
    if let Some(meta) = meta {
        request.extensions.insert(RequestMetaObject::from(meta));
    }
    if let Some(arguments) = arguments {
        request.extensions.insert(arguments);
    }
    Some(JsonRpcMessage::Request(JsonRpcRequest {
        jsonrpc: line.jsonrpc,
        id: line.id,
        request: ClientRequest::CallToolRequest(request),
    }))
}

#[cfg(test)]
mod tests {
    use super::{RawArguments, tools_call};
    use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage, RequestMetaObject};
    use serde_json::{Value, json};

    /// What the handler sees of a message: the message printed as JSON
    /// (with `_meta` from the extensions), and where `_meta` is kept.
    type Seen = (Value, Option<RequestMetaObject>, Option<RequestMetaObject>);

    fn seen(message: &ClientJsonRpcMessage) -> Seen {
        let JsonRpcMessage::Request(request) = message else {
            panic!("a request");
        };
        let ClientRequest::CallToolRequest(call) = &request.request else {
            panic!("a tools/call");
        };
        (
            serde_json::to_value(message).expect("prints"),
            call.params.meta.clone(),
            call.extensions.get::<RequestMetaObject>().cloned(),
        )
    }

    /// The message as rmcp reads it, and as this module reads it with the
    /// raw arguments parsed back into the request.
    fn both(line: &str) -> (Seen, Option<Seen>) {
        let rmcp: ClientJsonRpcMessage = serde_json::from_str(line).expect("rmcp reads it");
        let ours = tools_call(line.as_bytes()).map(|mut message| {
            if let JsonRpcMessage::Request(request) = &mut message
                && let ClientRequest::CallToolRequest(call) = &mut request.request
                && let Some(RawArguments(raw)) = call.extensions.remove::<RawArguments>()
            {
                call.params.arguments = Some(serde_json::from_str(&raw).expect("an object"));
            }
            seen(&message)
        });
        (seen(&rmcp), ours)
    }

    #[test]
    fn a_tools_call_reads_as_rmcp_reads_it() {
        let lines = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","arguments":{"name":"Ada"}}}"#,
            r#"{"jsonrpc":"2.0","id":"k-7","method":"tools/call","params":{"name":"hello"}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"hello","arguments":null}}"#,
            // Order of keys, unknown keys, escapes and numbers of every kind.
            r#"{"params":{"arguments":{"b":[1,-2,3.5,1e3,18446744073709551615],"a":"\u00e9\n\"x\"","c":{"d":null,"e":true}},"extra":1,"name":"t\u0031"},"method":"tools/call","id":3,"x":{"y":[]},"jsonrpc":"2.0"}"#,
            // `_meta` with a progress token and the cofferdam keys.
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"_meta":{"progressToken":"p1","cofferdam/idempotencyKey":"k","cofferdam/agent":"a"},"name":"hello","arguments":{"name":"Ada"}}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"hello","arguments":{},"requestState":"s","_meta":{"progressToken":9}}}"#,
        ];
        for line in lines {
            let (rmcp, ours) = both(line);
            assert_eq!(Some(rmcp), ours, "{line}");
        }
    }

    #[test]
    fn the_arguments_are_the_clients_own_text() {
        let line = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","arguments":{ "name" : "\u00e9", "n": 1e3 }}}"#;
        let Some(JsonRpcMessage::Request(request)) = tools_call(line.as_bytes()) else {
            panic!("a tools/call is read");
        };
        let ClientRequest::CallToolRequest(call) = request.request else {
            panic!("as a tools/call");
        };
        assert_eq!(call.params.arguments, None);
        let RawArguments(raw) = call
            .extensions
            .get::<RawArguments>()
            .expect("raw arguments");
        assert_eq!(raw, r#"{ "name" : "\u00e9", "n": 1e3 }"#);
        assert_eq!(
            serde_json::from_str::<Value>(raw).expect("JSON"),
            json!({ "name": "é", "n": 1000.0 })
        );
    }

    /// A `tools/call` whose arguments nest `depth` levels (the arguments
    /// object is the first), with brackets and escaped quotes in a string.
    fn nested(depth: usize) -> String {
        let inner = format!("{}{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"n","arguments":{{"s":"[[{{\"\\","x":{inner}}}}}}}"#
        )
    }

    #[test]
    fn arguments_nest_as_deep_as_rmcp_reads_and_no_deeper() {
        let line = nested(125);
        let (rmcp, ours) = both(&line);
        assert_eq!(Some(rmcp), ours);
        let line = nested(126);
        let refused = serde_json::from_str::<ClientJsonRpcMessage>(&line).expect_err("too deep");
        assert!(
            refused.to_string().starts_with("recursion limit exceeded"),
            "{refused}"
        );
        assert!(tools_call(line.as_bytes()).is_none());
    }

    #[test]
    fn every_other_line_is_left_to_rmcp() {
        let lines = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            // No id: a notification, which rmcp reads as a custom one.
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"hello"}}"#,
            // A stray `result` or `error` next to a request (rmcp #1283).
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello"},"result":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello"},"error":{}}"#,
            // Arguments that are no object, a missing name, a wrong version.
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","arguments":[1]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","arguments":"{}"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"hello"}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"hello"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","arguments":{"a":}}}"#,
            "not json",
        ];
        for line in lines {
            assert!(tools_call(line.as_bytes()).is_none(), "{line}");
        }
    }
}

//! Adapts a plain handler function to the WIT exports `describe` and `invoke`.

use serde::{Serialize, de::DeserializeOwned};

use crate::bindings::cofferdam::tool::types;
use crate::{Context, JsonSchema, ToolError, metadata::Metadata};

/// A function usable as a tool: `fn(Input) -> Result<Output, E>` or
/// `fn(&Context, Input) -> Result<Output, E>`, where `Input` is
/// `Deserialize + JsonSchema`, `Output` is `Serialize` and `E: Into<ToolError>`.
///
/// `Marker` only tells the two shapes apart; it is inferred.
pub trait Handler<Marker> {
    /// The input type, parsed from the call's JSON.
    type Input: DeserializeOwned + JsonSchema;
    /// The output type, returned as JSON.
    type Output: Serialize;
    /// Runs the handler.
    fn handle(&self, ctx: &Context, input: Self::Input) -> Result<Self::Output, ToolError>;
}

/// Marker for handlers that take only the input.
#[doc(hidden)]
pub struct InputOnly<I>(std::marker::PhantomData<I>);
/// Marker for handlers that take the context and the input.
#[doc(hidden)]
pub struct WithContext<I>(std::marker::PhantomData<I>);

impl<F, I, O, E> Handler<InputOnly<(I, O, E)>> for F
where
    F: Fn(I) -> Result<O, E>,
    I: DeserializeOwned + JsonSchema,
    O: Serialize,
    E: Into<ToolError>,
{
    type Input = I;
    type Output = O;
    fn handle(&self, _ctx: &Context, input: I) -> Result<O, ToolError> {
        self(input).map_err(Into::into)
    }
}

impl<F, I, O, E> Handler<WithContext<(I, O, E)>> for F
where
    F: Fn(&Context, I) -> Result<O, E>,
    I: DeserializeOwned + JsonSchema,
    O: Serialize,
    E: Into<ToolError>,
{
    type Input = I;
    type Output = O;
    fn handle(&self, ctx: &Context, input: I) -> Result<O, ToolError> {
        self(ctx, input).map_err(Into::into)
    }
}

/// Builds the `describe` answer: metadata plus the input type's JSON Schema.
pub fn describe<M, H: Handler<M>>(metadata: &Metadata, _handler: &H) -> types::ToolInfo {
    let schema = schemars::schema_for!(H::Input);
    types::ToolInfo {
        name: metadata.name.clone(),
        version: metadata.version.clone(),
        description: metadata.description.clone(),
        input_schema: serde_json::to_string(&schema)
            .unwrap_or_else(|_| String::from("{\"type\":\"object\"}")),
        effect: metadata.effect.into(),
    }
}

/// Runs one call: parse the input, run the handler, serialize the output.
pub fn invoke<M, H: Handler<M>>(
    ctx: types::CallContext,
    input: &str,
    handler: &H,
) -> Result<String, types::ToolError> {
    let ctx = Context::new(ctx);
    let input: H::Input = serde_json::from_str(input).map_err(|e| {
        types::ToolError::InvalidInput(format!("input does not match the schema: {e}"))
    })?;
    let output = handler
        .handle(&ctx, input)
        .map_err(types::ToolError::from)?;
    serde_json::to_string(&output)
        .map_err(|e| types::ToolError::Permanent(format!("cannot serialize output: {e}")))
}

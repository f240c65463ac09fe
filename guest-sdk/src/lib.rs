//! Write [cofferdam](https://example.invalid/cofferdam) tools in Rust.
//!
//! A tool is an ordinary function from a serde input type to a serde output
//! type; [`export_tool!`] turns it into a WebAssembly component that a
//! cofferdam host can load. The input's JSON Schema is generated from the type
//! (with [`schemars`]), so the host and any MCP client can show it to a model.
//!
//! ```no_run
//! use cofferdam_guest::{Context, ToolError};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! /// Whom to greet.
//! #[derive(Deserialize, JsonSchema)]
//! struct Input {
//!     /// The name to put in the greeting.
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Output {
//!     greeting: String,
//! }
//!
//! fn hello(ctx: &Context, input: Input) -> Result<Output, ToolError> {
//!     if input.name.is_empty() {
//!         return Err(ToolError::invalid_input("`name` must not be empty"));
//!     }
//!     ctx.log_info(&format!("greeting {}", input.name));
//!     Ok(Output { greeting: format!("Hello, {}!", input.name) })
//! }
//!
//! cofferdam_guest::export_tool!(hello, description = "Greets someone by name");
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (the crate
//! type must be `cdylib`) and run it with `cofferdam run hello.wasm --input
//! '{"name":"Ada"}'`.
//!
//! The handler may also take only the input (`fn(Input) -> Result<..>`).
//! Errors are anything that converts into [`ToolError`]; its case tells the host
//! whether a retry can help (see the WIT contract in `wit/tool.wit`).
//!
//! What this crate does not do: it does not grant capabilities. Files, the
//! environment and the network are whatever the host's policy for the tool
//! allows, reached through ordinary `std` APIs.

#![warn(missing_docs)]

mod context;
mod error;
mod handler;
pub mod http;

pub use context::{Context, Effect, Level};
pub use error::{ResultExt, ToolError};
pub use handler::Handler;
pub use schemars::{self, JsonSchema};
pub use serde_json;
pub use state::State;

/// Bindings generated from `wit/tool.wit`; used by [`export_tool!`].
#[doc(hidden)]
#[expect(clippy::too_many_arguments, reason = "generated lowering code")]
pub mod bindings {
    wit_bindgen::generate!({
        world: "tool",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "cofferdam_guest::bindings",
        export_macro_name: "export",
        generate_all,
    });
}

/// Implementation details of [`export_tool!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::handler::{describe, invoke};
    pub use crate::metadata::Metadata;
}

mod metadata;
mod state;

/// Exports a handler function as this component's tool.
///
/// ```text
/// cofferdam_guest::export_tool!(handler);
/// cofferdam_guest::export_tool!(handler, name = "hello", description = "Greets", effect = Effect::Pure);
/// ```
///
/// Keys (all optional): `name` (defaults to the crate name), `version` (the
/// crate version), `description` (the crate description), `effect`
/// ([`Effect::Pure`] unless given). Use it once per crate.
#[macro_export]
macro_rules! export_tool {
    ($handler:expr $(, $key:ident = $value:expr)* $(,)?) => {
        const _: () = {
            struct CofferdamTool;

            impl $crate::bindings::Guest for CofferdamTool {
                fn describe() -> $crate::bindings::cofferdam::tool::types::ToolInfo {
                    #[allow(unused_mut)]
                    let mut metadata = $crate::__private::Metadata::new(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                        env!("CARGO_PKG_DESCRIPTION"),
                    );
                    $( metadata.$key($value); )*
                    $crate::__private::describe(&metadata, &$handler)
                }

                fn invoke(
                    ctx: $crate::bindings::cofferdam::tool::types::CallContext,
                    input: ::std::string::String,
                ) -> ::std::result::Result<
                    ::std::string::String,
                    $crate::bindings::cofferdam::tool::types::ToolError,
                > {
                    $crate::__private::invoke(ctx, &input, &$handler)
                }
            }

            $crate::bindings::export!(CofferdamTool with_types_in $crate::bindings);
        };
    };
}

//! The `cofferdam` command line; see `cofferdam --help`.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::main()
}

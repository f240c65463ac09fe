//! The `cofferdam` command line; see `cofferdam --help`.

mod cli;
mod serve;

fn main() -> std::process::ExitCode {
    cli::main()
}

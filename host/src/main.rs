//! The `cofferdam` command line; see `cofferdam --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

//! `tallinn`: the Tallinn Relay client command line (see `tallinn --help`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tallinn_client::cli::main()
}

//! End-to-end suite: one test binary, modules per area, shared `util`.
//! Every test runs a real relay on 127.0.0.1 (port 0) with a temporary
//! data directory, and real clients (library or the `tallinn` binary).

mod agent;
mod cli;
mod client;
mod coordination;
mod coordination_cli;
mod daily;
mod evidence;
mod operator;
mod pty;
mod roster;
mod sharing;
mod system;
mod util;

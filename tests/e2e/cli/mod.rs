//! The `tallinn` CLI as a user runs it: help, exit codes, JSON output,
//! observers, tampering, and a SIGKILL in the middle of a sync.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use tallinn_client::archive::Archive;
use tallinn_common::message::{Message, Tlp};

use crate::util::*;

mod messaging;
mod safety;
mod usage;

const COMMANDS: &[&[&str]] = &[
    &[],
    &["init"],
    &["agent"],
    &["keygen"],
    &["fingerprint"],
    &["roster"],
    &["roster", "show"],
    &["send"],
    &["request"],
    &["offer"],
    &["status"],
    &["sync"],
    &["listen"],
    &["inbox"],
    &["show"],
    &["thread"],
    &["outbox"],
    &["quarantine"],
    &["quarantine", "retry"],
    &["quarantine", "purge"],
    &["attachment", "save"],
    &["outbox", "retry"],
    &["archive"],
    &["archive", "search"],
    &["archive", "export"],
    &["archive", "verify"],
    &["archive", "stats"],
];

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    tallinn_host::durable::private_dir(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

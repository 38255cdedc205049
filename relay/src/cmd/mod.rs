//! The `tallinn-relay` commands beyond argument parsing: `roster` (the
//! roster file and log), `service` (run, check-config, backup).

pub(crate) mod roster;
pub(crate) mod service;

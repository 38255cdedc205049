//! Tests of the command line's parsers and output.

use super::*;

#[test]
fn time_round_trip() {
    assert_eq!(parse_time("1970-01-01").unwrap(), 0);
    let t = parse_time("2026-11-29").unwrap();
    assert_eq!(fmt_time(t), "2026-11-29 00:00");
    assert_eq!(
        fmt_time(t + 13 * 3_600_000 + 5 * 60_000),
        "2026-11-29 13:05"
    );
    assert!(parse_time("2026-13-01").is_err());
    assert!(parse_time("yesterday").is_err());
}

#[test]
fn cli_parses() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

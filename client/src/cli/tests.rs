//! Tests of the command line's parsers and output.

use super::*;

#[test]
fn time_round_trip() {
    set_utc(true);
    assert_eq!(parse_time("1970-01-01").unwrap(), 0);
    let t = parse_time("2026-11-29").unwrap();
    assert_eq!(fmt_time(t), "2026-11-29 00:00");
    assert_eq!(
        fmt_time(t + 13 * 3_600_000 + 5 * 60_000),
        "2026-11-29 13:05"
    );
    assert!(parse_time("2026-13-01").is_err());
    assert!(parse_time("yesterday").is_err());
    // Ages back from now.
    // `now` after the parse, so a millisecond passing in between cannot
    // make the age look shorter than asked.
    let week = parse_time("7d").unwrap();
    let now = now_ms();
    assert!(now - week >= 7 * 86_400_000 && now - week < 7 * 86_400_000 + 60_000);
    assert_eq!(parse_age("12h"), Some(Ok(12 * 3_600_000)));
    assert_eq!(parse_age("30m"), Some(Ok(30 * 60_000)));
    assert_eq!(parse_age("2w"), Some(Ok(14 * 86_400_000)));
    assert_eq!(parse_age("d"), None);
    assert_eq!(parse_age("7y"), None);
    assert!(parse_age("99999999999999999999d").is_none_or(|r| r.is_err()));
    assert!(fmt_time_full(t + 42_000).ends_with("00:00:42 +00:00"));
    assert_eq!(fmt_age(59_000), "59s");
    assert_eq!(fmt_age(3 * 3_600_000), "3h");
    assert_eq!(fmt_age(2 * 86_400_000 + 5), "2d");
}

#[test]
fn list_lines_fit_any_width_and_keep_the_tlp_whole() {
    use crate::agent::api::*;
    let mut v = MessageView {
        msg_id: "0123456789abcdef0123456789abcdef".into(),
        index: 0,
        direction: DirectionView::Received,
        seq: 1,
        received_at_ms: 1_764_000_000_000,
        sender: "UA\u{1b}[2J".into(),
        channel: "a-very-long-channel-name".into(),
        sent_at_ms: 1_764_000_000_000,
        kind: KindView::Note,
        tlp: "AMBER+STRICT".into(),
        reply_to: None,
        subject: "Ünïcödé subject that is much longer than any terminal line could hold at all"
            .into(),
        body: String::new(),
        attachments: vec![],
        read: false,
        tlp_above: None,
        shared_by: Some("EE\u{1b}[2J".into()),
    };
    for width in [20, 40, 50, 69, 70, 80, 120, 300] {
        for line in message_lines(std::slice::from_ref(&v), width) {
            assert!(
                console::measure_text_width(&line) <= width,
                "{width}: {line:?}"
            );
            assert!(!line.contains('\u{1b}'), "escaped: {line:?}");
            if width >= 50 {
                assert!(line.contains("AMBER+STRICT"), "{width}: {line:?}");
            }
        }
    }
    v.read = true;
    assert!(message_lines(std::slice::from_ref(&v), 80)[0].starts_with(' '));
}

#[test]
fn cli_parses() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn each_cause_is_said_once() {
    let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
    let e = anyhow::Error::new(crate::config::ConfigError::Read {
        path: "/x/client.toml".into(),
        source: io,
    })
    .context("loading the client config");
    let text = error_text(&e);
    assert_eq!(text.matches("No such file").count(), 1, "{text}");
    assert!(
        text.starts_with("loading the client config: reading /x/client.toml"),
        "{text}"
    );
}

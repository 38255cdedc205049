//! The coordination commands through the `tallinn` binary, as a point of
//! contact uses them: `requests` (filters, `show`, `--json`), `send --to`,
//! the TLP ceiling, `share`, the chair in `inbox`, `--include-tlp-red`;
//! with their exit codes and help.

use std::process::Output;

use serde_json::Value;

use crate::roster::v2::V2;
use crate::util::*;

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    stdout(o)
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_direct_conversations_tlp_and_share_from_the_command_line() {
    timed(async {
        let v2 = V2::new(limits()).await;
        let cli = |who: &str, args: &[&str]| v2.env.cli(who, args);
        for who in ["UA", "PL", "EE"] {
            v2.pin(who);
            ok(&cli(who, &["sync"]));
        }

        // UA files a request; PL pledges.
        let req = ok(&cli(
            "UA",
            &[
                "request",
                "--channel",
                "loe-immediate",
                "--loe",
                "immediate",
                "--category",
                "hardware",
                "--priority",
                "high",
                "--tlp",
                "AMBER",
                "--subject",
                "Generators for Kharkiv",
                "--body",
                "two 100 kVA units",
            ],
        ))
        .trim()
        .to_string();
        ok(&cli("PL", &["sync"]));
        let offer = ok(&cli(
            "PL",
            &[
                "offer",
                "--request",
                &req[..8],
                "--subject",
                "Two units from Gdansk",
                "--body",
                "ready Monday",
            ],
        ))
        .trim()
        .to_string();
        ok(&cli("UA", &["sync"]));

        // The tracker, as JSON and as text.
        let list = json(&cli("UA", &["requests", "--json"]));
        let case = &list["cases"][0];
        assert_eq!(case["id"], req.as_str(), "{list}");
        assert_eq!(case["state"], "pledged");
        assert_eq!(case["priority"], "high");
        assert_eq!(case["loe"], "immediate");
        assert_eq!(case["offers"][0]["from"], "PL");
        assert_eq!(case["waiting_on_you"], true, "UA accepts or declines");
        let waiting = json(&cli("UA", &["requests", "--waiting-on-me", "--json"]));
        assert_eq!(waiting["cases"].as_array().unwrap().len(), 1);
        let none = json(&cli("UA", &["requests", "--unanswered", "--json"]));
        assert!(none["cases"].as_array().unwrap().is_empty(), "{none}");
        let closed = json(&cli(
            "UA",
            &["requests", "--state", "closed,declined", "--json"],
        ));
        assert!(closed["cases"].as_array().unwrap().is_empty());
        let mine = json(&cli("PL", &["requests", "--mine", "--json"]));
        assert_eq!(mine["cases"][0]["id"], req.as_str());
        let text = ok(&cli("UA", &["requests"]));
        assert!(
            text.contains("pledged") && text.contains("Generators"),
            "{text}"
        );
        assert!(text.lines().any(|l| l.starts_with('!')), "{text}");
        // UA accepts PL's offer; the case is in PL's hands.
        ok(&cli(
            "UA",
            &[
                "status",
                "--about",
                &offer,
                "--state",
                "acknowledged",
                "--subject",
                "Accepted",
            ],
        ));
        ok(&cli("PL", &["sync"]));
        let pl_waits = json(&cli("PL", &["requests", "--waiting-on-me", "--json"]));
        assert_eq!(pl_waits["cases"][0]["id"], req.as_str(), "{pl_waits}");
        let detail = json(&cli("PL", &["requests", "show", &req[..8], "--json"]));
        assert_eq!(detail["history"].as_array().unwrap().len(), 2, "{detail}");
        assert_eq!(detail["history"][0]["effect"], "moved");
        assert_eq!(detail["history"][0]["detail"], "pledged");
        let text = ok(&cli("PL", &["requests", "show", &req[..8]]));
        assert!(
            text.contains("History") && text.contains("accepted"),
            "{text}"
        );
        let o = cli("UA", &["requests", "--state", "done"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("unknown case state"), "{}", stderr(&o));
        let o = cli("UA", &["requests", "show", "ffffffff"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

        // A direct conversation: UA added when left out, RED allowed there.
        let o = cli(
            "PL",
            &[
                "send",
                "--to",
                "GB",
                "--tlp",
                "AMBER",
                "--subject",
                "bilateral",
                "--body",
                "x",
            ],
        );
        ok(&o);
        assert!(stderr(&o).contains("UA added"), "{}", stderr(&o));
        assert!(stderr(&o).contains("@GB+PL+UA"), "{}", stderr(&o));
        let o = cli(
            "PL",
            &[
                "send",
                "--to",
                "UA",
                "--tlp",
                "RED",
                "--subject",
                "RED bilateral",
                "--body",
                "y",
            ],
        );
        let red = ok(&o).trim().to_string();
        assert!(stderr(&o).contains("@PL+UA"), "{}", stderr(&o));
        // RED above plenary's ceiling: refused before anything is stored.
        let o = cli(
            "PL",
            &[
                "send",
                "--channel",
                "plenary",
                "--tlp",
                "RED",
                "--subject",
                "no",
                "--body",
                "z",
            ],
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("above the ceiling of plenary"),
            "{}",
            stderr(&o)
        );
        let o = cli(
            "PL",
            &[
                "send",
                "--channel",
                "plenary",
                "--to",
                "UA",
                "--tlp",
                "AMBER",
                "--subject",
                "s",
                "--body",
                "b",
            ],
        );
        assert_eq!(o.status.code(), Some(2), "--channel and --to conflict");
        // A chair-only channel.
        let o = cli(
            "PL",
            &[
                "send",
                "--channel",
                "announcements",
                "--tlp",
                "GREEN",
                "--subject",
                "s",
                "--body",
                "b",
            ],
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("chair (EE) only"), "{}", stderr(&o));
        ok(&cli(
            "EE",
            &[
                "send",
                "--channel",
                "announcements",
                "--tlp",
                "GREEN",
                "--subject",
                "From the chair",
                "--body",
                "b",
            ],
        ));
        let inbox = ok(&cli("UA", &["inbox"]));
        assert!(inbox.contains("chair: EE"), "{inbox}");

        // Share: the RED message never; a plenary-era request to GB works
        // (GB reads loe-immediate) and goes in @GB+PL+UA.
        let o = cli("PL", &["share", "--to", "GB", &red, &req, "--json"]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "one of two refused: {}",
            stderr(&o)
        );
        let outcome: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(outcome["conversation"], "@GB+PL+UA");
        let items = outcome["items"].as_array().unwrap();
        assert!(items
            .iter()
            .any(|i| i["msg_id"] == red.as_str()
                && i["refused"].as_str().unwrap().contains("TLP:RED")));
        assert!(items
            .iter()
            .any(|i| i["msg_id"] == req.as_str() && i["share"].is_string()));
        let o = cli("PL", &["share", "--to", "GB"]);
        assert_eq!(o.status.code(), Some(2), "needs --channel or ids");

        // The export leaves RED out unless asked for by name.
        ok(&cli("UA", &["sync"]));
        let dir = v2.env.dir.path();
        let out = dir.join("ua.jsonl");
        ok(&cli(
            "UA",
            &["archive", "export", "--out", out.to_str().unwrap()],
        ));
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(!text.contains("RED bilateral") && text.contains("\"withheld\":\"tlp\""));
        let out = dir.join("ua-red.jsonl");
        ok(&cli(
            "UA",
            &[
                "archive",
                "export",
                "--include-tlp-red",
                "--out",
                out.to_str().unwrap(),
            ],
        ));
        assert!(std::fs::read_to_string(&out)
            .unwrap()
            .contains("RED bilateral"));

        // Help.
        for (cmd, want) in [
            ("requests", "--waiting-on-me"),
            ("share", "--to"),
            ("send", "--to"),
        ] {
            let o = cli("UA", &[cmd, "--help"]);
            assert!(ok(&o).contains(want), "{cmd}: {}", stdout(&o));
        }
    })
    .await;
}

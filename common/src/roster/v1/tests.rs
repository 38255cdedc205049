use super::*;
use crate::identity::Identity;

/// Builds roster TOML for `(id, role)` pairs with fresh keys, plus extra text.
pub(crate) fn roster_toml(people: &[(&str, &str)], extra: &str) -> String {
    let mut s = String::new();
    for (id, role) in people {
        let ident = Identity::generate(ParticipantId::new(*id).unwrap());
        s.push_str(&ident.roster_entry(&format!("{id} POC"), role));
        s.push('\n');
    }
    s.push_str(extra);
    s
}

const PEOPLE: &[(&str, &str)] = &[
    ("UA", "member"),
    ("EE", "member"),
    ("PL", "member"),
    ("NATO", "observer"),
];

fn err(extra: &str) -> RosterError {
    Roster::parse(&roster_toml(PEOPLE, extra)).unwrap_err()
}

fn channel(members: &str, observers: &str) -> String {
    format!(
        "[[channel]]\nid = \"plenary\"\ndescription = \"d\"\nmembers = {members}\nobservers = {observers}\n"
    )
}

#[test]
fn valid_roster_and_queries() {
    let text = roster_toml(
        PEOPLE,
        &format!(
            "{}\n[[channel]]\nid = \"back-office\"\nmembers = [\"EE\", \"UA\"]\n",
            channel("[\"*\"]", "[\"NATO\"]")
        ),
    );
    let r = Roster::parse(&format!("beneficiary = \"UA\"\n{text}")).unwrap();
    assert_eq!(r.beneficiary().unwrap().as_str(), "UA");
    assert_eq!(r.role("NATO"), Some(Role::Observer));
    assert_eq!(r.role("XX"), None);
    let plenary = r.channel("plenary").unwrap();
    assert_eq!(plenary.members.len(), 3);
    assert!(r.may_post("PL", "plenary"));
    assert!(!r.may_post("PL", "back-office"));
    assert_eq!(
        r.check_post("NATO", "plenary"),
        Err(PostError::ReadOnly {
            participant: "NATO".into()
        })
    );
    assert!(matches!(
        r.check_post("UA", "nope"),
        Err(PostError::UnknownChannel(_))
    ));
    let rec: Vec<&str> = r
        .recipients("UA", "plenary")
        .unwrap()
        .iter()
        .map(|p| p.id().as_str())
        .collect();
    assert_eq!(rec, vec!["EE", "NATO", "PL"]);
    assert_eq!(r.channels_of(&ParticipantId::new("PL").unwrap()).count(), 1);
    // Fingerprint is stable across a round trip through the file form.
    let again = Roster::parse(&r.to_file().to_toml()).unwrap();
    assert_eq!(again.fingerprint(), r.fingerprint());
    assert_eq!(again, r);
}

#[test]
fn fingerprint_ignores_order_but_not_content() {
    let text = roster_toml(PEOPLE, &channel("[\"UA\", \"EE\"]", "[]"));
    let a = Roster::parse(&text).unwrap();
    let b = Roster::parse(&text.replace("[\"UA\", \"EE\"]", "[\"EE\", \"UA\"]")).unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    let c = Roster::parse(&text.replace("description = \"d\"", "description = \"e\"")).unwrap();
    assert_ne!(a.fingerprint(), c.fingerprint());
}

#[test]
fn duplicate_participant() {
    let text = roster_toml(&[("UA", "member"), ("UA", "member")], "");
    assert_eq!(
        Roster::parse(&text).unwrap_err(),
        RosterError::DuplicateParticipant("UA".into())
    );
}

#[test]
fn bad_participant_id() {
    let text = roster_toml(&[("UA", "member")], "").replace("id = \"UA\"", "id = \"U A\"");
    let e = Roster::parse(&text).unwrap_err();
    assert_eq!(e, RosterError::BadParticipantId("U A".into()));
    assert!(e.to_string().contains("U A"));
    let long = "X".repeat(33);
    let text =
        roster_toml(&[("UA", "member")], "").replace("id = \"UA\"", &format!("id = \"{long}\""));
    assert_eq!(
        Roster::parse(&text).unwrap_err(),
        RosterError::BadParticipantId(long)
    );
}

#[test]
fn bad_base64_and_wrong_key_length() {
    let base = roster_toml(&[("UA", "member")], "");
    let line = base.lines().find(|l| l.starts_with("sign_key")).unwrap();
    let e = Roster::parse(&base.replace(line, "sign_key = \"not base64!\"")).unwrap_err();
    assert!(
        matches!(&e, RosterError::BadKey { participant, field: "sign_key", .. } if participant == "UA"),
        "{e}"
    );
    let line = base.lines().find(|l| l.starts_with("enc_key")).unwrap();
    let e = Roster::parse(&base.replace(line, "enc_key = \"AAAA\"")).unwrap_err();
    assert!(
        matches!(&e, RosterError::BadKey { participant, field: "enc_key", .. } if participant == "UA"),
        "{e}"
    );
    assert!(
        e.to_string().contains("UA") && e.to_string().contains("32 bytes"),
        "{e}"
    );
}

#[test]
fn shared_keys_refused() {
    let base = roster_toml(&[("UA", "member")], "");
    let copy = base.replace("id = \"UA\"", "id = \"EE\"");
    let e = Roster::parse(&format!("{base}\n{copy}")).unwrap_err();
    assert_eq!(
        e,
        RosterError::SharedKey("UA".into(), "EE".into(), "sign_key")
    );
}

#[test]
fn bad_channel_id() {
    let e = err("[[channel]]\nid = \"Plenary\"\nmembers = [\"*\"]\n");
    assert_eq!(e, RosterError::BadChannelId("Plenary".into()));
}

#[test]
fn duplicate_channel() {
    let c = channel("[\"*\"]", "[]");
    assert_eq!(
        err(&format!("{c}{c}")),
        RosterError::DuplicateChannel("plenary".into())
    );
}

#[test]
fn channel_names_unknown_id() {
    assert_eq!(
        err(&channel("[\"UA\", \"XX\"]", "[]")),
        RosterError::UnknownParticipant {
            channel: "plenary".into(),
            participant: "XX".into()
        }
    );
    assert_eq!(
        err(&channel("[\"UA\"]", "[\"EU\"]")),
        RosterError::UnknownParticipant {
            channel: "plenary".into(),
            participant: "EU".into()
        }
    );
}

#[test]
fn observer_as_member() {
    assert_eq!(
        err(&channel("[\"UA\", \"NATO\"]", "[]")),
        RosterError::ObserverAsMember {
            channel: "plenary".into(),
            participant: "NATO".into()
        }
    );
}

#[test]
fn member_as_observer() {
    assert_eq!(
        err(&channel("[\"UA\"]", "[\"PL\"]")),
        RosterError::MemberAsObserver {
            channel: "plenary".into(),
            participant: "PL".into()
        }
    );
}

#[test]
fn duplicate_in_channel() {
    assert_eq!(
        err(&channel("[\"UA\", \"UA\"]", "[]")),
        RosterError::DuplicateInChannel {
            channel: "plenary".into(),
            participant: "UA".into()
        }
    );
}

#[test]
fn empty_channel() {
    assert_eq!(
        err(&channel("[]", "[\"NATO\"]")),
        RosterError::EmptyChannel("plenary".into())
    );
}

#[test]
fn wildcard_mixed_with_names() {
    assert_eq!(
        err(&channel("[\"*\", \"UA\"]", "[]")),
        RosterError::WildcardMixed("plenary".into())
    );
    assert_eq!(
        err(&channel("[\"UA\"]", "[\"*\"]")),
        RosterError::WildcardObservers("plenary".into())
    );
}

#[test]
fn channel_without_beneficiary() {
    let text = roster_toml(PEOPLE, &channel("[\"EE\", \"PL\"]", "[]"));
    let e = Roster::parse(&format!("beneficiary = \"UA\"\n{text}")).unwrap_err();
    assert_eq!(
        e,
        RosterError::MissingBeneficiary {
            channel: "plenary".into(),
            beneficiary: "UA".into()
        }
    );
    assert!(e.to_string().contains("plenary"));
}

#[test]
fn beneficiary_must_be_a_member() {
    let text = roster_toml(PEOPLE, "");
    for b in ["XX", "NATO"] {
        let e = Roster::parse(&format!("beneficiary = \"{b}\"\n{text}")).unwrap_err();
        assert_eq!(e, RosterError::BadBeneficiary(b.into()));
    }
}

#[test]
fn unknown_fields_and_bad_roles_are_syntax_errors() {
    let e = Roster::parse("colour = \"red\"").unwrap_err();
    assert!(matches!(e, RosterError::Syntax(_)));
    let text = roster_toml(&[("UA", "chair")], "");
    assert!(matches!(
        Roster::parse(&text).unwrap_err(),
        RosterError::Syntax(_)
    ));
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,400}") {
        let _ = Roster::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_bytes(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        let _ = Roster::parse(&String::from_utf8_lossy(&b));
    }
}

#[test]
fn channel_policies_parse_and_change_the_fingerprint_only_when_set() {
    let base = roster_toml(PEOPLE, "");
    let with = |extra: &str| {
        Roster::parse(&format!(
            "{base}[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\nobservers = [\"NATO\"]\n{extra}\n"
        ))
    };
    let plain = with("").unwrap();
    let same = with("post = \"members\"\nmax_tlp = \"RED\"").unwrap();
    assert_eq!(plain.fingerprint(), same.fingerprint());
    let capped = with("max_tlp = \"TLP:AMBER+STRICT\"").unwrap();
    assert_ne!(plain.fingerprint(), capped.fingerprint());
    assert_eq!(capped.max_tlp("plenary"), Some(Tlp::AmberStrict));
    let chair = with("post = \"chair\"").unwrap();
    // Version 1 has no chair: the channel is closed to posts.
    assert!(matches!(
        chair.check_post("UA", "plenary"),
        Err(PostError::ChairOnly { .. })
    ));
    let rec = chair.to_state_record("UA", 1, [0; 32]);
    assert_eq!(rec.channels[0].post, 1);
    assert_eq!(
        capped.to_state_record("UA", 1, [0; 32]).channels[0].max_tlp,
        3
    );
    // The file form keeps the policy.
    let again = Roster::from_file(capped.to_file()).unwrap();
    assert_eq!(again.fingerprint(), capped.fingerprint());
    for bad in ["post = \"everyone\"", "max_tlp = \"PURPLE\""] {
        assert!(with(bad).is_err(), "{bad}");
    }
}

//! `tallinn-audit verify` on a hostile export: any bytes, any JSON, any
//! base64 inside it. The pinned deployment is taken from line 1 when it
//! names one, so inputs reach the roster log and the records. Properties:
//! no panic, and a verdict is always given (a report that is either ok or
//! names a failure).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tallinn_audit::verify::verify;

fuzz_target!(|data: &[u8]| {
    let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let deployment = std::str::from_utf8(first)
        .ok()
        .and_then(|l| {
            let at = l.find("\"deployment\":\"")? + 14;
            l.get(at..at + 64)
        })
        .and_then(|h| tallinn_audit::parse_fingerprint(h).ok())
        .unwrap_or([0; 32]);
    let v = verify("fuzz", data, &deployment, None);
    assert!(v.report.ok() || v.report.failure.is_some());
    let _ = v.report.text();
    let _ = v.report.json();
    let _ = tallinn_audit::cross::cross(vec![v.clone(), v]);
});

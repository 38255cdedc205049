//! Reading a line's members: each missing or mistyped member is a
//! `format` failure naming the member.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::Walk;
use crate::report::Failure;

impl Walk {
    pub(super) fn unknown_members(
        &self,
        obj: &Map<String, Value>,
        allowed: &[&str],
        record: Option<u64>,
    ) -> Result<(), Failure> {
        let allowed: BTreeSet<&str> = allowed.iter().copied().collect();
        match obj.keys().find(|k| !allowed.contains(k.as_str())) {
            Some(k) => Err(self.fail(record, "format", format!("unexpected member {k:?}"))),
            None => Ok(()),
        }
    }

    pub(super) fn string(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        record: Option<u64>,
    ) -> Result<String, Failure> {
        obj.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                self.fail(
                    record,
                    "format",
                    format!("{key} is missing or not a string"),
                )
            })
    }

    pub(super) fn number(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        record: Option<u64>,
    ) -> Result<u64, Failure> {
        obj.get(key).and_then(Value::as_u64).ok_or_else(|| {
            self.fail(
                record,
                "format",
                format!("{key} is missing or not a number"),
            )
        })
    }

    pub(super) fn hash(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        record: Option<u64>,
    ) -> Result<[u8; 32], Failure> {
        obj.get(key)
            .and_then(Value::as_str)
            .and_then(|s| hex::decode(s).ok())
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| self.fail(record, "format", format!("{key} is not 64 hex digits")))
    }
}

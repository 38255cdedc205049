//! Checkpoints: the export's own and one held independently, each signed
//! by the exported device and pointing at a record of the chain.

use tallinn_common::evidence::SignedCheckpoint;

use super::Walk;
use crate::report::{CheckpointSeen, Failure};

impl Walk {
    /// A checkpoint: signed by the exported device with its key of the
    /// checkpoint's epoch, and its head on the chain.
    pub(super) fn checkpoint(
        &self,
        c: &SignedCheckpoint,
        source: &'static str,
    ) -> Result<CheckpointSeen, Failure> {
        let fail = |d: String| Failure::general("checkpoint", format!("({source}) {d}"));
        let body = c.decode().map_err(|e| fail(e.to_string()))?;
        if body.participant != self.report.participant || body.device != self.report.device {
            return Err(fail(format!(
                "signed for {}/{}, the export is of {}/{}",
                body.participant, body.device, self.report.participant, self.report.device
            )));
        }
        let log = self
            .log
            .as_ref()
            .ok_or_else(|| fail("no roster log".into()))?;
        let state = log.state_at(body.roster_epoch).ok_or_else(|| {
            fail(format!(
                "signed at roster epoch {}, beyond the export's roster log (epoch {})",
                body.roster_epoch,
                log.epoch()
            ))
        })?;
        let device = state
            .device(&body.participant, &body.device)
            .ok_or_else(|| {
                fail(format!(
                    "the device is not in the roster at epoch {}",
                    body.roster_epoch
                ))
            })?;
        c.verify(device.sign_key.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        let n = self.hashes.len() as u64;
        if body.index > n {
            return Err(fail(format!(
                "it covers {} records, the export holds {n}: records are missing \
                 (a truncated archive, or an older copy)",
                body.index
            )));
        }
        let at = match body.index.checked_sub(1) {
            None => [0; 32],
            Some(i) => self.hashes.get(i as usize).copied().unwrap_or([0; 32]),
        };
        if at != body.head_hash {
            return Err(fail(format!(
                "its head {} is not record {}'s hash {}: the chain differs from what the device signed",
                hex::encode(body.head_hash),
                body.index.saturating_sub(1),
                hex::encode(at)
            )));
        }
        Ok(CheckpointSeen {
            source,
            index: body.index,
            head_hash: hex::encode(body.head_hash),
            time_ms: body.time_ms,
        })
    }
}

//! Checkpoints (sled flushed and synced, then the retired commit-log file
//! emptied) and fail-stop: the first failed write, sync or checkpoint stops
//! the store for good.

use std::sync::mpsc;
use std::time::Duration;

use super::keys::NEXT_SEQ_KEY;
use super::sled_store::Inner;
use super::wal::Wal;
use super::StoreError;

impl Inner {
    /// Refuses work once the store has failed.
    pub(super) fn check_failed(&self) -> Result<(), StoreError> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Err(StoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Records the first failure (fail-stop) and returns the error for the
    /// caller: the original one.
    pub(super) fn fail(&self, e: StoreError) -> StoreError {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!(error = %e, "storage failure: the store refuses every further write");
            *f = Some(e.to_string());
        }
        e
    }

    /// A checkpoint; any failure stops the store (the commit log is then
    /// never truncated, and the next start replays it).
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        self.check_failed()?;
        self.checkpoint_once().map_err(|e| self.fail(e))
    }

    /// One checkpoint: switch appends to the other commit-log file, flush
    /// sled and `fdatasync` it **without** holding the writer lock (sends
    /// keep being committed meanwhile), then empty the retired file.
    ///
    /// Every record in the retired file was written into sled before the
    /// switch (appends write sled first), so the flush that starts after the
    /// switch covers them all. Records queued but not yet written move to
    /// the new file with the switch, so a commit never skips them.
    fn checkpoint_once(&self) -> Result<(), StoreError> {
        let _one = self
            .checkpointing
            .lock()
            .map_err(|_| StoreError::Poisoned)?;
        let retired = {
            let mut w = self.state.lock().map_err(|_| StoreError::Poisoned)?;
            let active = w.active;
            let other = 1 - active;
            let other_empty = w.wals.get(other).is_none_or(Wal::is_empty);
            let active_idle = w
                .wals
                .get(active)
                .is_none_or(|wal| wal.is_empty() && !wal.has_pending());
            if other_empty && active_idle {
                return Ok(());
            }
            // Appends leave the next seq to here: one insert per checkpoint,
            // not per message. A crash before it is covered by the log
            // entries and the commit log, which both give the seq back.
            self.tree.insert(NEXT_SEQ_KEY, &w.next_seq.to_be_bytes())?;
            if other_empty {
                let pending = w
                    .wals
                    .get_mut(active)
                    .map(Wal::take_pending)
                    .unwrap_or_default();
                if let Some(next) = w.wals.get_mut(other) {
                    next.put_pending(pending);
                }
                w.active = other;
                active
            } else {
                // A failed earlier cycle left the other file full: finish it.
                other
            }
        };
        self.db.flush()?;
        self.log.sync()?;
        let mut w = self.state.lock().map_err(|_| StoreError::Poisoned)?;
        if let Some(wal) = w.wals.get_mut(retired) {
            wal.reset()?;
        }
        Ok(())
    }
}

/// The checkpoint thread: a checkpoint every [`CHECKPOINT_INTERVAL`] (or when
/// nudged), while the store exists.
pub(super) fn checkpoint_loop(
    store: &std::sync::Weak<Inner>,
    wake: &mpsc::Receiver<()>,
    every: Duration,
) {
    loop {
        match wake.recv_timeout(every) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let Some(inner) = store.upgrade() else { return };
        if let Err(e) = inner.checkpoint() {
            // The commit log still holds everything and is never truncated
            // now: nothing is lost. No retry: a failed sync is not retried
            // (the store has stopped; the relay exits and replays).
            tracing::error!(error = %e, "store checkpoint failed; checkpoints stop");
            return;
        }
    }
}

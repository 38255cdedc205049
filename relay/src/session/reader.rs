//! Reading frames from the session stream: in chunks after `Welcome` (so
//! sends that arrived together are checked together, with a bounded number
//! decoded ahead), and one bounded frame before it.

use std::collections::VecDeque;

use quinn::RecvStream;
use tallinn_common::wire::{self, ErrorCode, Frame, WireError};

use super::Close;

/// Most sends checked together (one batch signature verification).
pub(super) const SEND_BATCH: usize = 64;

/// Most frames decoded ahead of processing; further bytes stay undecoded in
/// the decoder (and, beyond quinn's stream window, unread at the peer).
const MAX_READY_FRAMES: usize = 2 * SEND_BATCH;

/// Bytes received but not yet processed: at most [`MAX_READY_FRAMES`]
/// decoded frames; the rest stays undecoded in the decoder. No I/O.
struct Pending {
    decoder: wire::FrameDecoder,
    ready: VecDeque<Frame>,
    /// A decoding error, reported once the frames before it were served.
    failed: Option<(ErrorCode, String)>,
}

impl Pending {
    fn new(max: u32) -> Self {
        Self {
            decoder: wire::FrameDecoder::new(max),
            ready: VecDeque::new(),
            failed: None,
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.decoder.extend(bytes);
        self.decode_buffered();
    }

    fn decode_buffered(&mut self) {
        while self.ready.len() < MAX_READY_FRAMES && self.failed.is_none() {
            match self.decoder.next_frame() {
                Ok(Some(f)) => self.ready.push_back(f),
                Ok(None) => break,
                Err(e) => {
                    // Frames before the bad one are still served.
                    self.failed = Some((e.code(), e.to_string()));
                    break;
                }
            }
        }
    }
}

/// Reads frames from the session stream in chunks, so that sends which
/// arrived together can be checked together.
pub(super) struct FrameReader {
    recv: RecvStream,
    pending: Pending,
}

impl FrameReader {
    pub(super) fn new(recv: RecvStream, max: u32) -> Self {
        Self {
            recv,
            pending: Pending::new(max),
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream cleanly.
    /// Cancel-safe: a chunk is either taken whole or not at all.
    pub(super) async fn next(&mut self) -> Result<Option<Frame>, Close> {
        loop {
            let p = &mut self.pending;
            if let Some(f) = p.ready.pop_front() {
                return Ok(Some(f));
            }
            if let Some((code, reason)) = p.failed.take() {
                return Err(Close::err(code, reason));
            }
            // Frames left undecoded by the bound come first.
            p.decode_buffered();
            if !p.ready.is_empty() || p.failed.is_some() {
                continue;
            }
            match self.recv.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => self.pending.extend(&chunk.bytes),
                Ok(None) if self.pending.decoder.buffered() == 0 => return Ok(None),
                Ok(None) => {
                    return Err(Close {
                        code: None,
                        reason: "stream closed: finished mid-frame".into(),
                    })
                }
                Err(e) => {
                    return Err(Close {
                        code: None,
                        reason: format!("stream closed: {e}"),
                    })
                }
            }
        }
    }

    /// Decodes whatever quinn has already received, without waiting.
    ///
    /// Polls `read_chunk` with a no-op waker: data that is there is taken
    /// (cancel-safe: a chunk is taken whole), and on `Pending` the future is
    /// dropped; the next real `read_chunk` registers the task's own waker
    /// again. End of stream and errors are left for [`FrameReader::next`]
    /// to meet on its own read.
    fn poll_received(&mut self) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while self.pending.failed.is_none() && self.pending.ready.len() < MAX_READY_FRAMES {
            let polled = {
                let mut read = std::pin::pin!(self.recv.read_chunk(usize::MAX, true));
                std::future::Future::poll(read.as_mut(), &mut cx)
            };
            match polled {
                std::task::Poll::Ready(Ok(Some(chunk))) => self.pending.extend(&chunk.bytes),
                _ => break,
            }
        }
    }

    /// The envelope of the next frame if it is a `Send` already received.
    pub(super) fn take_ready_send(&mut self) -> Option<Vec<u8>> {
        if self.pending.ready.is_empty() {
            self.poll_received();
        }
        match self.pending.ready.front() {
            Some(Frame::Send { .. }) => match self.pending.ready.pop_front() {
                Some(Frame::Send { envelope }) => Some(envelope),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Reads one frame, refusing one over `max` before reading its payload.
pub(super) async fn read_frame(recv: &mut RecvStream, max: u32) -> Result<Option<Frame>, Close> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => {
            return Err(Close {
                code: None,
                reason: format!("stream closed: {e}"),
            })
        }
    }
    let len = wire::frame_len(prefix, max).map_err(|e| Close::err(e.code(), e.to_string()))?;
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await.map_err(|e| Close {
        code: None,
        reason: format!("stream closed: {e}"),
    })?;
    wire::decode_frame(&payload)
        .map(Some)
        .map_err(|e: WireError| Close::err(e.code(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10 item 15: however many frames arrive at once, at most
    /// [`MAX_READY_FRAMES`] are decoded ahead of processing; the rest
    /// waits as bytes, and a decoding error waits behind the good frames.
    #[test]
    fn frames_decoded_ahead_are_bounded() {
        let mut p = Pending::new(1024);
        let ack = wire::encode_frame(&Frame::Ack { up_to_seq: 1 });
        let mut bytes = Vec::new();
        for _ in 0..1000 {
            bytes.extend_from_slice(&ack);
        }
        bytes.extend_from_slice(&[0, 0, 0, 1, 0xff]); // undecodable
        p.extend(&bytes);
        assert_eq!(p.ready.len(), MAX_READY_FRAMES);
        assert!(p.decoder.buffered() > 0, "the rest stays undecoded");
        let mut served = 0;
        while p.failed.is_none() || !p.ready.is_empty() {
            if p.ready.pop_front().is_some() {
                served += 1;
            } else {
                p.decode_buffered();
            }
            assert!(p.ready.len() <= MAX_READY_FRAMES);
        }
        assert_eq!(served, 1000, "every frame before the bad one is served");
        assert_eq!(p.failed.map(|f| f.0), Some(ErrorCode::Malformed));
    }
}

//! The connection manager and one session's frame loop: connect with
//! backoff, resend the outbox, fetch the roster log, then process frames in
//! batches (deliveries, answers to our sends, roster entries, checkpoints),
//! one archive flush per batch before the acknowledgement.

use super::delivery::{accepted, admit_batch, precheck_deliveries, receive};
use super::sending::{reseal, schedule_retry};
use super::*;

pub(super) async fn manager(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let s = inner.settings.clone();
    let endpoint =
        match connection::endpoint(s.trust.as_ref(), s.relay, s.allow_classical_key_exchange) {
            Ok(e) => e,
            Err(e) => {
                inner.update(|st| st.fatal = Some(e.to_string()));
                return;
            }
        };
    let mut backoff = defaults::MIN_BACKOFF;
    loop {
        if *stop.borrow() {
            break;
        }
        let attempt = tokio::time::timeout(
            s.connect_timeout,
            connection::establish(&endpoint, s.relay, &s.server_name, &s.identity, &s.device),
        )
        .await
        .unwrap_or(Err(ConnectError::Timeout("connecting to the relay")));
        match attempt {
            Ok(session) => {
                backoff = defaults::MIN_BACKOFF;
                info!(relay = %esc(&session.relay_name), pending = session.pending, "connected");
                let conn = session.conn.clone();
                let ended = run_session(&inner, session, stop.clone()).await;
                if *stop.borrow() {
                    conn.close(0u32.into(), b"bye");
                }
                *inner.writer.lock().unwrap_or_else(|p| p.into_inner()) = None;
                // Replaced by a newer session of the same device label: a
                // second installation shares the label. Reconnecting would
                // take the cursor back and forth forever: stop and say so.
                let replaced = matches!(
                    &ended,
                    Err(ConnectError::Refused {
                        code: ErrorCode::Replaced,
                        ..
                    })
                );
                // Revoked or removed from the roster while connected, or a
                // roster log this client cannot trust: reconnecting cannot
                // help. Stop and say what happened.
                let permanent = match &ended {
                    Err(ConnectError::Refused {
                        code: code @ (ErrorCode::Revoked | ErrorCode::UnknownParticipant),
                        reason,
                    }) => Some(format!("the relay closed the session: {code}: {reason}")),
                    Err(
                        e @ (ConnectError::UntrustedRoster(_) | ConnectError::ArchiveBehind(_)),
                    ) => Some(e.to_string()),
                    _ => None,
                };
                let reason = match ended {
                    Ok(()) => "session ended".to_string(),
                    Err(e) => {
                        if !e.is_transient()
                            && !matches!(e, ConnectError::Lost(_) | ConnectError::Protocol(_))
                        {
                            warn!(error = %esc(&e.to_string()), "session ended by the relay");
                        }
                        e.to_string()
                    }
                };
                inner.update(|st| {
                    st.connected = false;
                    st.last_error = Some(reason.clone());
                });
                let _ = inner.events.send(Event::Disconnected { reason });
                if let Some(why) = permanent {
                    warn!(reason = %esc(&why), "stopping: not retried");
                    inner.update(|st| st.fatal = Some(why));
                    break;
                }
                if replaced {
                    inner.update(|st| {
                        st.fatal = Some(format!(
                            "another session of {} with device label {:?} took over; \
                             every installation needs its own device label",
                            s.identity.id(),
                            s.device.as_str()
                        ));
                    });
                    break;
                }
            }
            Err(e) => {
                debug!(error = %e, "connect failed");
                if !e.is_transient() {
                    inner.update(|st| st.fatal = Some(e.to_string()));
                    break;
                }
                inner.update(|st| st.last_error = Some(e.to_string()));
            }
        }
        if *stop.borrow() {
            break;
        }
        // Jitter: a random pause between half and all of the current backoff.
        let pause = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
        backoff = (backoff * 2).min(s.max_backoff);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => break,
        }
    }
    endpoint.close(0u32.into(), b"bye");
}

async fn run_session(
    inner: &Arc<Inner>,
    session: Session,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnectError> {
    let Session {
        conn,
        mut send,
        mut recv,
        pending,
        ..
    } = session;
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            if send.write_all(&b).await.is_err() {
                return;
            }
        }
        // Every queued frame (the last Ack included) is written: finish the
        // stream and give the relay a moment to read it before we close.
        if send.finish().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        }
    });
    let (ftx, mut frx) = mpsc::channel::<Result<Frame, ConnectError>>(defaults::ARCHIVE_BATCH * 2);
    let rconn = conn.clone();
    let reader = tokio::spawn(async move {
        loop {
            let f = connection::read_frame(&mut recv, &rconn).await;
            let stop = f.is_err();
            if ftx.send(f).await.is_err() || stop {
                break;
            }
        }
    });
    *inner.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(wtx.clone());
    inner.update(|st| {
        st.connected = true;
        st.sessions += 1;
        st.pending = pending;
        st.delivered = 0;
        st.last_error = None;
        st.roster_synced = false;
        st.checkpointed = None;
    });
    let _ = inner.events.send(Event::Connected { pending });
    // Resend everything still in the outbox: same bytes, same msg_id.
    for e in inner
        .outbox
        .pending()
        .map_err(|e| ConnectError::Protocol(e.to_string()))?
    {
        let _ = wtx
            .send(wire::encode_frame(&Frame::Send {
                envelope: e.envelope.clone(),
            }))
            .await;
    }
    // Version 2: bring the roster log up to date (the relay then pushes
    // every later entry).
    if let Some(f) = roster_sync::fetch_frame(inner) {
        let _ = wtx.send(f).await;
    }
    let result = tokio::select! {
        r = process_frames(inner, &mut frx, &wtx) => r,
        _ = stop.changed() => Ok(()),
    };
    reader.abort();
    *inner.writer.lock().unwrap_or_else(|p| p.into_inner()) = None;
    drop(wtx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    result
}

async fn process_frames(
    inner: &Arc<Inner>,
    frx: &mut mpsc::Receiver<Result<Frame, ConnectError>>,
    wtx: &mpsc::Sender<Vec<u8>>,
) -> Result<(), ConnectError> {
    let mut batch = Vec::with_capacity(defaults::ARCHIVE_BATCH);
    let mut checkpoints = evidence::Checkpoints::default();
    let v2 = inner.roster().is_v2();
    loop {
        let Some(first) = frx.recv().await else {
            return Err(ConnectError::Lost("reader stopped".into()));
        };
        batch.push(first);
        while batch.len() < defaults::ARCHIVE_BATCH {
            match frx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let mut ack = None;
        let mut delivered = 0u64;
        let mut new_events = Vec::new();
        let mut finished = Vec::new();
        let mut failure = None;
        let mut retry = Vec::new();
        let mut reseal_ids = Vec::new();
        let mut roster_advanced = false;
        let mut roster_current = false;
        // Every delivery of the batch is decoded and its signature checked
        // together (one Ed25519 batch verification) before the loop.
        let mut checked = precheck_deliveries(&inner.roster(), &batch);
        let mut admitted = admit_batch(inner, &checked);
        for (i, f) in batch.drain(..).enumerate() {
            let frame = match f {
                Ok(fr) => fr,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            match frame {
                Frame::Deliver { .. } if v2 && !checkpoints.checked => {
                    failure = Some(ConnectError::Protocol(
                        "the relay delivered before sending this device's checkpoint".into(),
                    ));
                    break;
                }
                Frame::Deliver {
                    seq,
                    received_at_ms,
                    envelope,
                } => {
                    let check = checked.get_mut(i).and_then(Option::take);
                    let opened = admitted.get_mut(i).and_then(Option::take);
                    if let Some(ev) =
                        receive(inner, seq, received_at_ms, envelope, check, opened)
                            .map_err(|e| ConnectError::Protocol(format!("archive: {e}")))?
                    {
                        new_events.push(ev);
                    }
                    ack = Some(seq);
                    delivered += 1;
                }
                Frame::Accepted { msg_id, seq } => {
                    if let Some(ev) = accepted(inner, msg_id, seq, None)
                        .map_err(|e| ConnectError::Protocol(format!("archive: {e}")))?
                    {
                        finished.push((msg_id, Ok(seq)));
                        new_events.push(ev);
                    }
                }
                Frame::Receipt { receipt } => {
                    let (msg_id, seq) = (receipt.body.msg_id, receipt.body.seq);
                    if let Some(ev) = accepted(inner, msg_id, seq, Some(&receipt))
                        .map_err(|e| ConnectError::Protocol(format!("archive: {e}")))?
                    {
                        finished.push((msg_id, Ok(seq)));
                        new_events.push(ev);
                    }
                }
                Frame::CheckpointLatest { checkpoint } if !checkpoints.checked => {
                    if let Err(e) = evidence::check_latest(inner, checkpoint, &mut checkpoints) {
                        failure = Some(e);
                        break;
                    }
                }
                Frame::CheckpointLatest { checkpoint } => {
                    match evidence::confirmed(inner, checkpoint, &mut checkpoints) {
                        Ok(index) => inner.update(|st| st.checkpointed = Some(index)),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                Frame::Rejected {
                    msg_id,
                    code,
                    reason,
                } => {
                    let ours = inner
                        .outbox
                        .get(&msg_id)
                        .map_err(|e| ConnectError::Protocol(format!("outbox: {e}")))?
                        .is_some();
                    if msg_id == CHECKPOINT_REFUSED && checkpoints.in_flight.is_some() {
                        // Our checkpoint was refused: logged, and not sent
                        // again until the archive moves.
                        warn!(code = %code, reason = %esc(&reason), "the relay refused this device's archive checkpoint");
                        if let Some(index) = evidence::refused(&mut checkpoints) {
                            inner.update(|st| st.checkpointed = Some(index));
                        }
                    } else if code == ErrorCode::BadRosterEntry && !inner.roster_submit_pending() {
                        // The answer to our fetch: this relay has no roster
                        // log although we pin a deployment.
                        failure = Some(ConnectError::UntrustedRoster(format!(
                            "this client pins a deployment, but the relay answered: {reason}"
                        )));
                        break;
                    } else if code == ErrorCode::BadRosterEntry
                        || (!ours && msg_id == MsgId([0; 16]) && inner.roster_submit_pending())
                    {
                        inner.finish_roster_submit(Err(format!("{code}: {reason}")));
                    } else if code == ErrorCode::Duplicate {
                        // An earlier attempt was accepted (its Accepted was lost).
                        if ours {
                            if let Some(ev) = accepted(inner, msg_id, 0, None)
                                .map_err(|e| ConnectError::Protocol(format!("archive: {e}")))?
                            {
                                finished.push((msg_id, Ok(0)));
                                new_events.push(ev);
                            }
                        }
                    } else if code == ErrorCode::StaleRoster && ours {
                        // Sealed against an epoch the relay no longer
                        // accepts: fetch the log, then seal it again.
                        warn!(%msg_id, reason = %esc(&reason), "stale_roster: fetching the roster log to re-seal");
                        inner
                            .stale
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(msg_id);
                        if let Some(f) = roster_sync::fetch_frame(inner) {
                            let _ = wtx.send(f).await;
                        }
                    } else if code == ErrorCode::ClockSkew && ours {
                        // Sealed too long ago (queued while offline), or our
                        // clock is off: seal the same message again, now.
                        reseal_ids.push(msg_id);
                    } else if matches!(
                        code,
                        ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::ShuttingDown
                    ) {
                        warn!(%msg_id, code = %code, reason = %esc(&reason), "send deferred; stays in the outbox");
                        if ours {
                            retry.push(msg_id);
                        }
                        finished.push((
                            msg_id,
                            Err(ClientError::Queued {
                                msg_id,
                                why: format!("{code}: {reason}"),
                            }),
                        ));
                    } else {
                        // Never silent: the entry stays, marked refused, is
                        // no longer sent, and `tallinn outbox` shows why
                        // until the user resends or drops it.
                        warn!(%msg_id, code = %code, reason = %esc(&reason), "send refused; kept in the outbox, marked refused");
                        if ours {
                            let refusal = crate::outbox::Refusal {
                                code,
                                reason: reason.clone(),
                                at_ms: now_ms(),
                            };
                            inner
                                .outbox
                                .mark_refused(&msg_id, &refusal)
                                .map_err(|e| ConnectError::Protocol(format!("outbox: {e}")))?;
                        }
                        finished.push((
                            msg_id,
                            Err(ClientError::Rejected {
                                msg_id,
                                code,
                                reason,
                            }),
                        ));
                    }
                }
                Frame::RosterEntries {
                    head,
                    first,
                    entries,
                } => match roster_sync::apply_entries(inner, head, first, &entries) {
                    Ok(applied) => {
                        roster_advanced |= applied.advanced;
                        match applied.fetch_more {
                            Some(from) => {
                                let _ = wtx
                                    .send(wire::encode_frame(&Frame::RosterFetch { from }))
                                    .await;
                            }
                            None => roster_current = true,
                        }
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                },
                Frame::RosterAccepted { index, .. } => {
                    debug!(index, "roster entry accepted by the relay");
                    inner.finish_roster_submit(Ok(index));
                }
                Frame::Error { code, reason } => {
                    failure = Some(ConnectError::Refused { code, reason });
                    break;
                }
                other => {
                    failure = Some(ConnectError::Protocol(format!(
                        "unexpected {} frame from the relay",
                        other.name()
                    )));
                    break;
                }
            }
        }
        // One durable flush for the whole batch, then acknowledge and report.
        inner
            .archive
            .flush()
            .map_err(|e| ConnectError::Protocol(format!("archive flush: {e}")))?;
        if roster_advanced {
            // Durable before the ack below: released from the quarantine
            // only once archived.
            new_events.extend(
                roster_sync::reverify_quarantine(inner)
                    .map_err(|e| ConnectError::Protocol(format!("archive: {e}")))?,
            );
        }
        if roster_current {
            roster_sync::reseal_stale(inner);
        }
        if roster_current || roster_advanced {
            let epoch = inner.roster().epoch();
            inner.update(|st| {
                st.roster_epoch = epoch;
                st.roster_synced |= roster_current;
            });
        }
        if let Some(seq) = ack {
            let _ = wtx
                .send(wire::encode_frame(&Frame::Ack { up_to_seq: seq }))
                .await;
        }
        for (id, r) in finished {
            inner.finish_waiter(&id, r);
        }
        let (mut archived, mut quarantined) = (0, 0);
        let listening = inner.subscribed.load(std::sync::atomic::Ordering::Relaxed);
        for ev in new_events {
            match &ev {
                Event::Message(_) | Event::Archived => archived += 1,
                Event::Quarantined(_) => quarantined += 1,
                _ => {}
            }
            if listening && !matches!(ev, Event::Archived) {
                let _ = inner.events.send(ev);
            }
        }
        inner.update(|st| {
            st.delivered += delivered;
            st.archived += archived;
            st.quarantined += quarantined;
        });
        // Version 2: caught up and the archive moved: sign its head.
        let caught_up = {
            let st = inner.state.borrow();
            st.delivered >= st.pending && st.roster_synced && inner.outbox.pending_len() == 0
        };
        if failure.is_none() {
            if let Some(f) = evidence::next_frame(inner, caught_up, &mut checkpoints) {
                let _ = wtx.send(f).await;
            }
        }
        if !retry.is_empty() {
            schedule_retry(inner.clone(), retry);
        }
        for old_id in reseal_ids {
            match reseal(inner, &old_id) {
                Ok(Some(new_id)) => {
                    warn!(old = %old_id, new = %new_id, "clock_skew: message sealed again with the current time");
                    inner.finish_waiter(
                        &old_id,
                        Err(ClientError::Queued {
                            msg_id: new_id,
                            why: format!("re-sealed as {new_id} after clock_skew"),
                        }),
                    );
                }
                Ok(None) => {}
                Err(e) => warn!(msg_id = %old_id, error = %e, "could not re-seal after clock_skew"),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
}

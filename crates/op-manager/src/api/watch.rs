//! The agent's watch (`op_proto::watch`): one kept connection per agent, heartbeats up and the
//! desired state down, in place of a long-poll sync re-sent every sync wait.
//!
//! `GET /v1/agent/watch` (the node's own credential, `Upgrade: op-watch`) is checked like a sync
//! call (the node is known, the credential holds no more than its share of sync slots) and
//! answered `101`; hyper then hands the bare connection over and frees its own buffers, and one
//! small task per agent serves it ([`serve`]). The task does what a sync call does, event by
//! event:
//! - a beat is taken in as a sync call's heartbeat ([`super::agent::take_beat`]: acknowledged
//!   directives, facts, status) and is answered only when it is the watch's first (a reconnect
//!   is a full resync), when the agent's index is not the node's, when an output request waits,
//!   or when the last full answer is older than [`WATCH_REFRESH_SECS`];
//! - a change of the node's state, or of every node's (a job saved), sends the new state at once;
//! - an output request sends the light answer (`DesiredState::directives_only`);
//! - to an agent that asked for deltas ([`DELTA_HEADER`]), every state after the watch's first
//!   goes as a [`StateDelta`] from the last one sent, until the refresh sends a whole one again:
//!   the watch keeps the jobs it last sent as one hash of `(name, revision)` each ([`Sent`]), and
//!   names those the agent holds instead of sending them;
//! - a beat that nothing went down for during a sync wait gets `alive`, so an agent can tell a
//!   frozen manager (whose socket stays open) from a quiet one.
//!
//! A watch that carries no beat for `node_timeout` is closed: a stopped agent keeps its socket
//! open, and only beats are signs of life. A refusal (unknown node, revoked credential, a
//! malformed frame) is sent as an error frame before the watch closes, with the code a sync call
//! would have answered, so the agent reacts the same way (register again, enroll again, back off).

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use chrono::Utc;
use hyper_util::rt::TokioIo;
use op_proto::agent::{DesiredJob, DesiredState};
use op_proto::watch::{
    DELTA_HEADER, Frames, KeptJob, MAX_UP_FRAME, StateDelta, WATCH_PROTOCOL, WATCH_REFRESH_SECS,
    WatchBeat, WatchDown, encode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use uuid::Uuid;

use super::agent::{NodeWakes, Wake, answer, live, take_beat, too_many_syncs};
use super::error::ApiError;
use crate::app::App;
use crate::auth::Caller;

/// How long one frame may take to go out before the agent is taken for gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers the upgrade request and hands the connection to [`serve`].
pub async fn open(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(WATCH_PROTOCOL));
    if !asked {
        return Err(ApiError::bad(
            "upgrade_required",
            format!(
                "a watch starts with the headers Connection: upgrade and Upgrade: {WATCH_PROTOCOL}"
            ),
        ));
    }
    let Some(node) = caller.node_id else {
        return Err(ApiError::Denied(
            "a watch is held with a node's own credential: register first".into(),
        ));
    };
    // Checked here so a refusal is a plain HTTP answer; taken again for the watch's lifetime.
    drop(
        app.auth
            .syncs
            .take(&caller.token_id)
            .ok_or_else(too_many_syncs)?,
    );
    if live(app.hub.node(&app.store, node).await?).is_none() {
        return Err(ApiError::UnknownNode(node));
    }
    let deltas = req
        .headers()
        .get(DELTA_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1");
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => serve(app, caller, node, deltas, TokioIo::new(io)).await,
            Err(e) => tracing::debug!(%node, error = %e, "the watch's upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, WATCH_PROTOCOL)
        .body(Body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Lowers the open-watches gauge however the watch ends.
struct Open<'a>(&'a App);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.metrics.watches_open.dec();
    }
}

/// The jobs of the last whole or delta state sent on a watch: what the agent holds once it read
/// it (frames arrive in order), one hash of `(name, revision)` each, sorted. Eight bytes a job.
struct Sent(Vec<u64>);

impl Sent {
    fn key(job: &DesiredJob) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        job.spec.name.hash(&mut h);
        job.revision.hash(&mut h);
        h.finish()
    }

    /// The jobs of `keys` (one per job, in order), sorted for the next delta.
    fn of(mut keys: Vec<u64>) -> Sent {
        keys.sort_unstable();
        Sent(keys)
    }

    /// `state` as a delta from the state these jobs were sent with (`base`): the jobs held
    /// named, the others left in `state.jobs`; `keys` are its jobs' keys, in order. A hash that
    /// collides names a job the agent does not hold at that revision; the agent finds it
    /// missing and reopens for a whole state.
    fn delta(&self, base: u64, keys: &[u64], mut state: DesiredState) -> StateDelta<DesiredState> {
        let mut kept = Vec::new();
        let mut sent = Vec::new();
        for (at, (job, key)) in std::mem::take(&mut state.jobs)
            .into_iter()
            .zip(keys)
            .enumerate()
        {
            if self.0.binary_search(key).is_ok() {
                kept.push(KeptJob {
                    at,
                    name: job.spec.name,
                    revision: job.revision,
                });
            } else {
                sent.push(job);
            }
        }
        state.jobs = sent;
        StateDelta { base, kept, state }
    }
}

enum Event {
    Frame(Vec<u8>),
    Changed,
    Uploads,
}

/// Serves one agent's watch until it closes, falls silent, is refused, or the manager stops.
async fn serve<I: AsyncRead + AsyncWrite + Unpin>(
    app: Arc<App>,
    caller: Caller,
    node: Uuid,
    deltas: bool,
    mut io: I,
) {
    let Some(_slot) = app.auth.syncs.take(&caller.token_id) else {
        let _ = send(
            &mut io,
            &WatchDown::<()>::Error(too_many_syncs().watch_error()),
        )
        .await;
        return;
    };
    app.metrics.watches_open.inc();
    let _open = Open(&app);
    // Listen before the first beat reads the state, as a sync call does.
    let mut wakes = NodeWakes::listen(&app, node);
    let mut frames = Frames::new(MAX_UP_FRAME);
    let silence = app.config.node_timeout;
    let refresh = Duration::from_secs(WATCH_REFRESH_SECS);
    let mut last_beat = Instant::now();
    // The index the agent holds: as its last beat said, or as last sent. None before its first.
    let mut held: Option<u64> = None;
    let mut refreshed = Instant::now();
    // The index and jobs of the last state sent, for deltas: none before the first (whole).
    let mut sent: Option<(u64, Sent)> = None;
    // The last beat's arrival on our clock and its `sent_at` on the agent's: every answer
    // carries both, so the agent measures the clocks' offset on one message.
    let mut beat_clock = (Utc::now(), None);
    // When anything last went down: a beat answered by nothing for a sync wait gets `alive`.
    let mut last_sent = Instant::now();
    let refusal: Option<ApiError> = loop {
        let event = tokio::select! {
            r = io.read(frames.buf()) => match r {
                Ok(0) | Err(_) => break None,
                Ok(n) => match frames.filled(n) {
                    Ok(Some(frame)) => Event::Frame(frame),
                    Ok(None) => continue,
                    Err(e) => break Some(ApiError::bad("invalid_frame", e.to_string())),
                },
            },
            wake = wakes.next() => match wake {
                Wake::Closed => break None,
                Wake::Changed => Event::Changed,
                Wake::Uploads => Event::Uploads,
            },
            // No beat for a node timeout: a stopped agent, whose socket is still open.
            _ = tokio::time::sleep_until(last_beat + silence) => break None,
            _ = app.shutdown.cancelled() => break None,
        };
        let is_beat = matches!(event, Event::Frame(_));
        let reply = match event {
            Event::Frame(frame) => {
                let beat: WatchBeat = match serde_json::from_slice(&frame) {
                    Ok(b) => b,
                    Err(e) => {
                        break Some(ApiError::bad("invalid_json", format!("a watch beat: {e}")));
                    }
                };
                if let Err(e) = caller.speaks_for(beat.beat.node_id) {
                    break Some(e.into());
                }
                last_beat = Instant::now();
                app.metrics.watch_beats.inc();
                beat_clock = (Utc::now(), beat.beat.sent_at);
                let state = match Box::pin(take_beat(&app, beat.beat, beat_clock.0)).await {
                    Ok(s) => s,
                    Err(e) => break Some(e),
                };
                // The first beat of a watch is a reconnect: a full resync, always.
                let due = held.is_none() || refreshed.elapsed() >= refresh;
                held = Some(beat.index);
                if state.index != beat.index || due {
                    Some(false)
                } else if app.outputs.has_pending(node) {
                    Some(true)
                } else {
                    None
                }
            }
            Event::Changed => match held {
                None => None,
                Some(index) => match Box::pin(app.hub.node(&app.store, node)).await {
                    Ok(s) => match live(s) {
                        Some(s) if s.index == index => None,
                        Some(_) => Some(false),
                        None => break Some(ApiError::UnknownNode(node)),
                    },
                    Err(e) => break Some(e.into()),
                },
            },
            Event::Uploads => (held.is_some() && app.outputs.has_pending(node)).then_some(true),
        };
        // Some(light): send an answer, the light one if only an output request waits.
        let (Some(light), Some(index)) = (reply, held) else {
            if is_beat && last_sent.elapsed() >= app.config.sync_wait {
                if send(&mut io, &WatchDown::<()>::Alive).await.is_err() {
                    break None;
                }
                last_sent = Instant::now();
            }
            continue;
        };
        let mut state = match Box::pin(answer(&app, node, light, index, beat_clock.0)).await {
            Ok(s) => s,
            Err(e) => break Some(e),
        };
        state.beat_sent_at = beat_clock.1;
        let written = if state.directives_only {
            send(&mut io, &WatchDown::State(&state))
                .await
                .map(|n| ("light", n))
        } else {
            held = Some(state.index);
            let index = state.index;
            // Each job hashed once, and only on a watch that takes deltas.
            let keys: Vec<u64> = if deltas {
                state.jobs.iter().map(Sent::key).collect()
            } else {
                Vec::new()
            };
            let whole = !deltas || refreshed.elapsed() >= refresh;
            let written = match sent.as_ref() {
                Some((base, before)) if !whole => {
                    let delta = before.delta(*base, &keys, state);
                    send(&mut io, &WatchDown::Delta(delta))
                        .await
                        .map(|n| ("delta", n))
                }
                _ => {
                    refreshed = Instant::now();
                    send(&mut io, &WatchDown::State(&state))
                        .await
                        .map(|n| ("whole", n))
                }
            };
            if deltas {
                sent = Some((index, Sent::of(keys)));
            }
            written
        };
        match written {
            Ok((kind, bytes)) => app.metrics.watch_state_sent(kind, bytes),
            Err(_) => break None,
        }
        last_sent = Instant::now();
    };
    if let Some(e) = refusal {
        tracing::debug!(%node, error = %e, "watch refused");
        let _ = send(&mut io, &WatchDown::<DesiredState>::Error(e.watch_error())).await;
    }
    let _ = tokio::time::timeout(SEND_TIMEOUT, io.shutdown()).await;
}

/// Writes one frame, within [`SEND_TIMEOUT`]; returns its length.
async fn send<I: AsyncWrite + Unpin, S: serde::Serialize>(
    io: &mut I,
    down: &WatchDown<S>,
) -> std::io::Result<usize> {
    let json = serde_json::to_vec(down).map_err(std::io::Error::other)?;
    let frame = encode(&json);
    match tokio::time::timeout(SEND_TIMEOUT, async {
        io.write_all(&frame).await?;
        io.flush().await
    })
    .await
    {
        Ok(r) => r.map(|()| frame.len()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the agent took no frame for 30 s",
        )),
    }
}

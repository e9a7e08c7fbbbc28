//! The agent's watch: one kept connection per agent that carries its heartbeats up and its desired
//! state down, instead of a long-poll sync that must be answered and re-sent every sync wait
//! (issue 25).
//!
//! `GET /v1/agent/watch` with `Connection: upgrade` and `Upgrade: op-watch` (the node's own
//! credential) is answered `101 Switching Protocols`; from then on the connection carries frames
//! both ways: a 4-byte big-endian length, then that many bytes of JSON.
//! - up, agent → manager: a [`WatchBeat`], the same heartbeat a sync call carries plus the index
//!   the agent holds. The agent sends one at once, after a state it applies that carries
//!   directives (which acknowledges them) or asks for facts it holds others of, and at least
//!   once per sync wait;
//! - down, manager → agent: a [`WatchDown`]: the node's desired state, sent when a beat names an
//!   index other than the node's, when the node's state moves, when an output request is waiting
//!   (the light answer of `DesiredState::directives_only`), and every [`WATCH_REFRESH_SECS`] as a
//!   full resync; or a [`StateDelta`], the same state with the jobs the agent already holds
//!   named instead of sent, to an agent that asked for deltas ([`DELTA_HEADER`]); `alive` for a beat when nothing went down for a sync wait (a manager that froze
//!   without closing the connection is given up after [`silence_limit`]); or an error, after
//!   which the manager closes the watch.
//!
//! Why: a parked long-poll keeps hyper's connection state (two 8 KiB buffers) and the sync
//! future for every agent, and costs a whole request and answer every sync wait. A watch is the
//! bare socket and a small task: its read buffer holds at most the frame being read, and a beat
//! is parsed, recorded and left unanswered. A stopped agent keeps its socket open but sends no
//! beat: the manager closes its watch after `node_timeout` without one, and the node turns
//! NotReady as it would without the watch.
//!
//! A manager that does not know the watch answers 404; the agent then long-polls as before.
//!
//! Deltas: a job save changes one job of a node's set, and the full state repeats every other one
//! to every agent. An agent that opens its watch with [`DELTA_HEADER`] may be sent a
//! [`StateDelta`] instead: the whole new state (directives, packages, settings, secrets, holds
//! are small and sent as they are) but for the jobs it holds at the same revision, which are
//! named with their place in the list ([`KeptJob`]). A job's `(name, revision)` names one spec
//! for good: a save or an enable bumps the revision, and a deleted job's row (and its revision)
//! is kept, so a job saved again after a delete goes on counting. The first state of a watch
//! (a reconnect) and the periodic refresh are always whole; an agent that cannot apply a delta
//! (its base is not the state it holds, a kept job it does not hold) closes the watch and is sent
//! a whole state on the next one. A manager that does not know the header ignores it and sends
//! whole states, which such an agent still takes.

use serde::{Deserialize, Serialize};

use crate::agent::Heartbeat;

/// The `Upgrade` token of the watch protocol.
pub const WATCH_PROTOCOL: &str = "op-watch";

/// The largest frame an agent may send (a beat lists running runs and installed packages).
pub const MAX_UP_FRAME: usize = 1 << 20;

/// The largest frame a manager may send (a desired state with its jobs and directives).
pub const MAX_DOWN_FRAME: usize = 64 << 20;

/// Seconds between the full answers a manager sends unasked on a quiet watch, so that what an
/// agent holds is renewed (secret values, the manager list) even when its index never moves.
pub const WATCH_REFRESH_SECS: u64 = 300;

/// The request header (value `1`) with which an agent asks for [`StateDelta`]s on its watch.
pub const DELTA_HEADER: &str = "op-watch-deltas";

/// One beat, agent → manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchBeat {
    /// The index of the desired state the agent holds (0: none).
    pub index: u64,
    pub beat: Heartbeat,
}

/// One frame, manager → agent: `{"state": DesiredState}`, `{"error": {...}}`, or `"alive"`.
/// Generic over the state's type so a reader may decode only what it needs (the benchmark's
/// simulated agents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchDown<S> {
    State(S),
    /// The node's state as a change from the last one sent on this watch (only to an agent that
    /// asked with [`DELTA_HEADER`]).
    Delta(StateDelta<S>),
    Error(WatchError),
    /// The manager is there: sent for a beat when nothing else went down for a sync wait. A
    /// manager that froze or vanished without closing the connection sends nothing, and the
    /// agent gives the watch up after [`silence_limit`].
    Alive,
}

/// A desired state sent as what changed since the last one sent on the same watch: `state` is
/// whole but for its `jobs`, which hold only the jobs the agent does not hold at that revision;
/// the others are named in `kept`, each at its place in the whole list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDelta<S> {
    /// The index of the state this one follows: the last one sent on this watch, which the
    /// agent holds when it reads this (frames arrive in order).
    pub base: u64,
    pub kept: Vec<KeptJob>,
    pub state: S,
}

/// A job the agent keeps from the state it holds: its name and revision, and its place in the
/// new state's job list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptJob {
    pub at: usize,
    pub name: String,
    pub revision: u64,
}

/// Why a delta cannot be applied to what the agent holds. The agent then closes its watch and
/// is sent a whole state on the next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("a delta from state {base}, while this agent holds state {held}")]
    Base { base: u64, held: u64 },
    #[error("a delta keeps job {name:?} at revision {revision}, which this agent does not hold")]
    NotHeld { name: String, revision: u64 },
    #[error("a delta places a kept job at {at}, outside a list of {len} or twice")]
    Place { at: usize, len: usize },
}

/// The whole job list of a delta: each kept job (found by `find` among those held) at its place,
/// the sent ones in order in the places left. `held` is the index of the state the agent holds.
pub fn merge_jobs<J>(
    base: u64,
    held: u64,
    kept: &[KeptJob],
    sent: Vec<J>,
    mut find: impl FnMut(&KeptJob) -> Option<J>,
) -> Result<Vec<J>, DeltaError> {
    if base != held {
        return Err(DeltaError::Base { base, held });
    }
    let len = kept.len() + sent.len();
    let mut slots: Vec<Option<J>> = (0..len).map(|_| None).collect();
    for k in kept {
        let job = find(k).ok_or_else(|| DeltaError::NotHeld {
            name: k.name.clone(),
            revision: k.revision,
        })?;
        match slots.get_mut(k.at) {
            Some(slot @ None) => *slot = Some(job),
            _ => return Err(DeltaError::Place { at: k.at, len }),
        }
    }
    let mut sent = sent.into_iter();
    Ok(slots
        .into_iter()
        .map(|slot| slot.or_else(|| sent.next()))
        .collect::<Option<Vec<J>>>()
        .expect("the slots left are as many as the jobs sent"))
}

impl StateDelta<crate::agent::DesiredState> {
    /// The whole state, from the one the agent holds (`held`, with its `jobs`).
    pub fn resolve(
        self,
        held: u64,
        jobs: &[crate::agent::DesiredJob],
    ) -> Result<crate::agent::DesiredState, DeltaError> {
        let mut state = self.state;
        let sent = std::mem::take(&mut state.jobs);
        state.jobs = merge_jobs(self.base, held, &self.kept, sent, |k| {
            jobs.iter()
                .find(|j| j.revision == k.revision && j.spec.name == k.name)
                .cloned()
        })?;
        Ok(state)
    }
}

/// The bytes of a [`WatchDown::Alive`] frame's JSON.
pub const ALIVE: &[u8] = b"\"alive\"";

/// How long an agent holds a watch on which nothing came down (no state, no `alive`) before it
/// takes the manager for gone and moves on, for a sync wait of `wait`: two waits (the manager
/// says `alive` at least once per wait of beats) and 10 s for a busy manager.
pub fn silence_limit(wait: std::time::Duration) -> std::time::Duration {
    wait * 2 + std::time::Duration::from_secs(10)
}

/// Why the manager ends a watch: what the same request over HTTP would have answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchError {
    /// The HTTP status the same refusal has on a sync call (404 for `unknown_node`, 401, ...).
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// A frame's bytes: the length, then `json`.
pub fn encode(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 4);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json);
    out
}

/// A frame that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {len} bytes; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    #[error("the connection closed in the middle of a frame")]
    Truncated,
}

/// Reads frames from a byte stream in any pieces, keeping its progress in itself: a caller reads
/// into [`Frames::buf`] and reports what it got with [`Frames::filled`], so a read dropped half
/// way (a `select!` that took another branch) loses nothing. Between frames it holds nothing but
/// the 4 bytes of the next length.
#[derive(Debug)]
pub struct Frames {
    max: usize,
    head: [u8; 4],
    head_got: usize,
    body: Vec<u8>,
    body_got: usize,
}

impl Frames {
    pub fn new(max: usize) -> Frames {
        Frames {
            max,
            head: [0; 4],
            head_got: 0,
            body: Vec::new(),
            body_got: 0,
        }
    }

    /// Where the next bytes read go (never empty).
    pub fn buf(&mut self) -> &mut [u8] {
        if self.head_got < 4 {
            &mut self.head[self.head_got..]
        } else {
            &mut self.body[self.body_got..]
        }
    }

    /// Takes `n` bytes just read into [`Frames::buf`]; a whole frame, once there, is returned.
    pub fn filled(&mut self, n: usize) -> Result<Option<Vec<u8>>, FrameError> {
        if self.head_got < 4 {
            self.head_got += n;
            if self.head_got < 4 {
                return Ok(None);
            }
            let len = u32::from_be_bytes(self.head) as usize;
            if len > self.max {
                return Err(FrameError::TooLarge { len, max: self.max });
            }
            self.body = vec![0; len];
            self.body_got = 0;
        } else {
            self.body_got += n;
        }
        if self.body_got < self.body.len() {
            return Ok(None);
        }
        self.head_got = 0;
        self.body_got = 0;
        Ok(Some(std::mem::take(&mut self.body)))
    }

    /// The end of the stream: clean between frames, an error inside one.
    pub fn closed(&self) -> Result<(), FrameError> {
        if self.head_got == 0 {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step` and returns the frames read.
    fn read_all(bytes: &[u8], step: usize, max: usize) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut frames = Frames::new(max);
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let buf = frames.buf();
            let n = buf.len().min(step).min(bytes.len() - at);
            buf[..n].copy_from_slice(&bytes[at..at + n]);
            at += n;
            if let Some(f) = frames.filled(n)? {
                out.push(f);
            }
        }
        frames.closed()?;
        Ok(out)
    }

    #[test]
    fn frames_come_back_whole_whatever_the_pieces() {
        let mut stream = encode(br#"{"a":1}"#);
        stream.extend(encode(b""));
        stream.extend(encode(&[b'x'; 300]));
        for step in [1, 3, 4, 5, 7, 1000] {
            let frames = read_all(&stream, step, 1000).unwrap();
            assert_eq!(frames.len(), 3, "step {step}");
            assert_eq!(frames[0], br#"{"a":1}"#);
            assert!(frames[1].is_empty());
            assert_eq!(frames[2], vec![b'x'; 300]);
        }
    }

    #[test]
    fn an_oversized_or_cut_frame_is_an_error() {
        assert_eq!(
            read_all(&encode(&[0; 11]), 64, 10),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        // A length that announces 4 GiB is refused before anything is allocated.
        assert!(matches!(
            read_all(&[0xff, 0xff, 0xff, 0xff], 64, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        let whole = encode(b"hello");
        assert_eq!(read_all(&whole[..6], 64, 100), Err(FrameError::Truncated));
        assert_eq!(read_all(&whole[..2], 64, 100), Err(FrameError::Truncated));
    }

    #[test]
    fn the_down_frame_names_its_kind() {
        let down: WatchDown<u64> = WatchDown::State(7);
        assert_eq!(serde_json::to_string(&down).unwrap(), r#"{"state":7}"#);
        let alive: WatchDown<u64> = WatchDown::Alive;
        assert_eq!(serde_json::to_vec(&alive).unwrap(), ALIVE);
        let err: WatchDown<u64> =
            serde_json::from_str(r#"{"error":{"status":404,"code":"unknown_node","message":"m"}}"#)
                .unwrap();
        assert!(matches!(err, WatchDown::Error(e) if e.code == "unknown_node"));
    }

    fn kept(at: usize, name: &str, revision: u64) -> KeptJob {
        KeptJob {
            at,
            name: name.into(),
            revision,
        }
    }

    /// Held jobs as (name, revision); the kept ones are found by both.
    fn merge(
        base: u64,
        kept_jobs: &[KeptJob],
        sent: &[(&str, u64)],
    ) -> Result<Vec<(String, u64)>, DeltaError> {
        let held = [("a", 1), ("b", 4), ("c", 2)];
        merge_jobs(
            base,
            7,
            kept_jobs,
            sent.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
            |k| {
                held.iter()
                    .find(|(n, r)| *n == k.name && *r == k.revision)
                    .map(|(n, r)| (n.to_string(), *r))
            },
        )
    }

    #[test]
    fn a_delta_puts_kept_and_sent_jobs_in_their_places() {
        let got = merge(
            7,
            &[kept(0, "a", 1), kept(2, "c", 2)],
            &[("b", 5), ("d", 1)],
        )
        .unwrap();
        let want = [("a", 1), ("b", 5), ("c", 2), ("d", 1)];
        assert_eq!(got, want.map(|(n, r)| (n.to_string(), r)));
        // Nothing kept (every job changed) and nothing sent (every job removed).
        assert_eq!(merge(7, &[], &[("x", 1)]).unwrap(), vec![("x".into(), 1)]);
        assert_eq!(merge(7, &[], &[]).unwrap(), vec![]);
    }

    #[test]
    fn a_delta_that_does_not_fit_what_is_held_is_refused() {
        assert_eq!(
            merge(6, &[], &[]),
            Err(DeltaError::Base { base: 6, held: 7 })
        );
        // The revision held is another one.
        assert!(matches!(
            merge(7, &[kept(0, "b", 5)], &[]),
            Err(DeltaError::NotHeld { .. })
        ));
        // A place past the end, or taken twice.
        assert!(matches!(
            merge(7, &[kept(3, "a", 1)], &[("x", 1)]),
            Err(DeltaError::Place { at: 3, len: 2 })
        ));
        assert!(matches!(
            merge(7, &[kept(0, "a", 1), kept(0, "c", 2)], &[]),
            Err(DeltaError::Place { .. })
        ));
    }

    #[test]
    fn a_delta_frame_names_its_kind() {
        let down: WatchDown<u64> = WatchDown::Delta(StateDelta {
            base: 3,
            kept: vec![kept(1, "a", 2)],
            state: 9,
        });
        let json = serde_json::to_string(&down).unwrap();
        assert_eq!(
            json,
            r#"{"delta":{"base":3,"kept":[{"at":1,"name":"a","revision":2}],"state":9}}"#
        );
        assert_eq!(serde_json::from_str::<WatchDown<u64>>(&json).unwrap(), down);
    }
}

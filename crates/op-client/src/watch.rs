//! The agent's side of the watch (`op_proto::watch`): one kept connection that carries the
//! node's beats up and its desired state down.

use op_proto::agent::Heartbeat;
use op_proto::watch::{ALIVE, DELTA_HEADER, Frames, MAX_DOWN_FRAME, StateDelta, WatchDown, encode};
use op_proto::{ErrorBody, watch::WATCH_PROTOCOL};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Client, ClientError, Result};

/// An open watch. Dropping it closes the connection.
pub struct Watch {
    io: reqwest::Upgraded,
    frames: Frames,
    url: String,
    /// When the manager last sent anything (a frame, or the upgrade itself).
    heard: std::time::Instant,
}

/// A state sent down a watch: whole, or as a delta from the last one sent on it (only when the
/// watch was opened asking for deltas).
#[derive(Debug)]
pub enum WatchState<S> {
    Whole(S),
    Delta(StateDelta<S>),
}

/// [`op_proto::watch::WatchBeat`] without copying the heartbeat.
#[derive(Serialize)]
struct BeatRef<'a> {
    index: u64,
    beat: &'a Heartbeat,
}

impl Client {
    /// Opens the node's watch; with `deltas`, asking to be sent [`WatchState::Delta`]s (a
    /// manager that does not know them sends whole states). A manager that has no watch answers
    /// 404 (`ClientError::status`), and the agent long-polls [`Client::sync`] instead.
    pub async fn watch(&self, deltas: bool) -> Result<Watch> {
        let path = "/v1/agent/watch";
        let mut req = self
            .request(Method::GET, path)
            .version(reqwest::Version::HTTP_11)
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, WATCH_PROTOCOL);
        if deltas {
            req = req.header(DELTA_HEADER, "1");
        }
        let resp = self.send(path, req).await?;
        let url = self.url(path);
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ClientError::Decode {
                url,
                message: format!("expected 101 Switching Protocols, got {}", resp.status()),
            });
        }
        let io = resp.upgrade().await.map_err(|e| self.transport(path, e))?;
        Ok(Watch {
            io,
            frames: Frames::new(MAX_DOWN_FRAME),
            url,
            heard: std::time::Instant::now(),
        })
    }
}

impl Watch {
    fn broken(&self, message: impl Into<String>) -> ClientError {
        ClientError::Stream {
            url: self.url.clone(),
            message: message.into(),
        }
    }

    /// Sends one beat: the heartbeat, and the index of the desired state held.
    pub async fn beat(&mut self, index: u64, beat: &Heartbeat) -> Result<()> {
        let json =
            serde_json::to_vec(&BeatRef { index, beat }).map_err(|e| ClientError::Decode {
                url: self.url.clone(),
                message: e.to_string(),
            })?;
        let frame = encode(&json);
        let sent = async {
            self.io.write_all(&frame).await?;
            self.io.flush().await
        }
        .await;
        sent.map_err(|e| self.broken(e.to_string()))
    }

    /// How long the manager has sent nothing: past [`op_proto::watch::silence_limit`], take it
    /// for gone (frozen, or cut off without the connection closing).
    pub fn silent_for(&self) -> std::time::Duration {
        self.heard.elapsed()
    }

    /// The next frame's bytes (`alive` frames are taken in and skipped). Cancel-safe: a call
    /// dropped half way loses nothing, the next one goes on where it stopped.
    pub async fn next_frame(&mut self) -> Result<Vec<u8>> {
        loop {
            let n = match self.io.read(self.frames.buf()).await {
                Ok(n) => n,
                Err(e) => return Err(self.broken(e.to_string())),
            };
            if n == 0 {
                let message = match self.frames.closed() {
                    Ok(()) => "the manager closed the watch".to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(self.broken(message));
            }
            match self.frames.filled(n) {
                Ok(Some(frame)) => {
                    self.heard = std::time::Instant::now();
                    if frame != ALIVE {
                        return Ok(frame);
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(self.broken(e.to_string())),
            }
        }
    }

    /// A frame's state, or the refusal that ended the watch as the error a sync call would have
    /// returned (`unknown_node`, 401, ...).
    pub fn decode<S: DeserializeOwned>(&self, frame: &[u8]) -> Result<WatchState<S>> {
        match serde_json::from_slice::<WatchDown<S>>(frame) {
            Ok(WatchDown::State(s)) => Ok(WatchState::Whole(s)),
            Ok(WatchDown::Delta(d)) => Ok(WatchState::Delta(d)),
            Ok(WatchDown::Alive) => Err(ClientError::Decode {
                url: self.url.clone(),
                message: "an alive frame where a state was expected".into(),
            }),
            Ok(WatchDown::Error(e)) => Err(ClientError::Api {
                status: e.status,
                body: ErrorBody::new(e.code, e.message),
            }),
            Err(e) => Err(ClientError::Decode {
                url: self.url.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// The next state (see [`Watch::next_frame`] and [`Watch::decode`]). Cancel-safe.
    pub async fn next<S: DeserializeOwned>(&mut self) -> Result<WatchState<S>> {
        let frame = self.next_frame().await?;
        self.decode(&frame)
    }
}

//! Package downloads from the managers, for the deployer: `GET /v1/packages/NAME/V/content` on
//! the manager the link currently uses, resuming with Range, with the agent's token.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use op_client::{ClientError, TRANSFER_TIMEOUT};
use op_proto::package::PackageRef;

use super::Shared;
use crate::api::peers::TICKET_HEADER;
use crate::deploy::peers::{PeerError, PeerPlan};
use crate::deploy::{FetchError, Opened, Source};
use bytes::Bytes;
use op_proto::chunks::{ChunkManifest, TicketGrant};

pub struct ManagerSource {
    shared: Arc<Shared>,
}

impl ManagerSource {
    pub(super) fn new(shared: Arc<Shared>) -> ManagerSource {
        ManagerSource { shared }
    }
}

impl Source for ManagerSource {
    fn open<'a>(
        &'a self,
        pkg: &'a PackageRef,
        offset: u64,
    ) -> BoxFuture<'a, Result<Opened, FetchError>> {
        Box::pin(async move {
            let url = self.shared.current();
            let client = self
                .shared
                .new_client(&url)
                .map_err(|e| FetchError::Failed(e.to_string()))?
                .with_timeout(TRANSFER_TIMEOUT);
            let content = client
                .package_content(&pkg.name, pkg.version, offset)
                .await
                .map_err(|e| match e {
                    ClientError::Busy { retry_after, .. } => FetchError::Busy(retry_after),
                    other => FetchError::Failed(format!("{url}: {other}")),
                })?;
            let start = content.start;
            let body = futures_util::stream::unfold(content, |mut c| async move {
                match c.next_chunk().await {
                    Ok(Some(bytes)) => Some((Ok(bytes), c)),
                    Ok(None) => None,
                    Err(e) => Some((Err(e.to_string()), c)),
                }
            })
            .boxed();
            Ok(Opened { start, body })
        })
    }

    fn plan<'a>(&'a self, pkg: &'a PackageRef) -> BoxFuture<'a, Option<PeerPlan>> {
        Box::pin(async move {
            let url = self.shared.current();
            let client = self.shared.new_client(&url).ok()?;
            let base = format!(
                "/v1/agent/packages/{}/{}",
                utf8_percent(&pkg.name),
                pkg.version
            );
            // No ticket (peer distribution off, an older manager) or no peer: a plain download.
            let grant: TicketGrant = get_json(&client, &format!("{base}/ticket")).await?;
            if grant.sources.is_empty() {
                return grant.wait_secs.map(|w| PeerPlan {
                    ticket: grant.ticket,
                    sources: Vec::new(),
                    manifest: ChunkManifest {
                        sha256: String::new(),
                        size: 0,
                        chunk_size: 0,
                        chunks: Vec::new(),
                    },
                    wait_secs: Some(w),
                });
            }
            let manifest: ChunkManifest = get_json(&client, &format!("{base}/chunks")).await?;
            Some(PeerPlan {
                ticket: grant.ticket,
                sources: grant.sources,
                manifest,
                wait_secs: None,
            })
        })
    }

    fn peer_chunk<'a>(
        &'a self,
        url: &'a str,
        pkg: &'a PackageRef,
        k: usize,
        ticket: &'a str,
        silence: std::time::Duration,
    ) -> BoxFuture<'a, Result<Bytes, PeerError>> {
        Box::pin(async move {
            // A peer is called without this node's credential: the ticket is what it checks.
            let client = op_client::Client::with_tls(url, None, &self.shared.tls)
                .map_err(|e| PeerError::Failed(e.to_string()))?
                .with_timeout(TRANSFER_TIMEOUT);
            let path = format!(
                "/v1/peer/packages/{}/{}/chunks/{k}",
                utf8_percent(&pkg.name),
                pkg.version
            );
            let secs = silence.as_secs_f64();
            // A peer that was killed refuses the connection; one that froze (or whose host did)
            // accepts it and then says nothing: both are given up on within `silence`.
            let mut resp = tokio::time::timeout(
                silence,
                client
                    .request(axum::http::Method::GET, &path)
                    .header(TICKET_HEADER, ticket)
                    .send(),
            )
            .await
            .map_err(|_| PeerError::Unreachable(format!("{url}: no answer within {secs} s")))?
            .map_err(|e| PeerError::Unreachable(format!("{url}: {e}")))?;
            let status = resp.status();
            if status.as_u16() == 429 {
                return Err(PeerError::Busy);
            }
            if status.as_u16() == 401 || status.as_u16() == 403 {
                let why = tokio::time::timeout(silence, resp.text())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                return Err(PeerError::Refused(format!("{url}: {status}: {why}")));
            }
            if !status.is_success() {
                return Err(PeerError::Failed(format!("{url}: {status}")));
            }
            let mut out = Vec::with_capacity(
                resp.content_length()
                    .unwrap_or(0)
                    .min(op_proto::chunks::CHUNK_SIZE) as usize,
            );
            loop {
                match tokio::time::timeout(silence, resp.chunk()).await {
                    Err(_) => {
                        return Err(PeerError::Unreachable(format!(
                            "{url}: sent nothing for {secs} s in the middle of chunk {k}"
                        )));
                    }
                    Ok(Err(e)) => return Err(PeerError::Unreachable(format!("{url}: {e}"))),
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(piece))) => out.extend_from_slice(&piece),
                }
            }
            Ok(Bytes::from(out))
        })
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &op_client::Client,
    path: &str,
) -> Option<T> {
    let resp = client
        .request(axum::http::Method::GET, path)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// A package name as a path segment (names are restricted to safe characters; this only guards).
fn utf8_percent(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

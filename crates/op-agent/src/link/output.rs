//! Answers the manager's output requests (`Directive::UploadOutput`): read the run's output file
//! from the asked offset and post up to `OUTPUT_CHUNK_MAX` bytes to the manager that asked
//! (`reply_to`, one of the cluster's members). Requests come in a sync answer, alone in a light
//! answer (`DesiredState::directives_only`, which this agent asks for) or beside the full state;
//! one handed out by two members (the reader's member forwards it to every member when the node
//! is not syncing with it) is answered once.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use op_client::Client;
use op_proto::RunStatus;
use op_proto::agent::{OUTPUT_CHUNK_MAX, OutputChunk};
use uuid::Uuid;

use crate::executor::Executor;
use crate::executor::logs::run_log_path;
use crate::state::StateStore;

/// Request ids remembered, so a repeated directive is not answered twice.
const SEEN_MAX: usize = 1024;

pub struct OutputSender {
    state: StateStore,
    executor: Executor,
    node_id: Uuid,
    shared: Arc<super::Shared>,
    seen: Mutex<VecDeque<Uuid>>,
    /// A client per manager that asked, with the credential it was built with.
    clients: Mutex<HashMap<String, (Option<String>, Client)>>,
}

impl OutputSender {
    pub(super) fn new(
        state: StateStore,
        executor: Executor,
        node_id: Uuid,
        shared: Arc<super::Shared>,
    ) -> Arc<OutputSender> {
        Arc::new(OutputSender {
            state,
            executor,
            node_id,
            shared,
            seen: Mutex::new(VecDeque::new()),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Answers one request in the background; a repeated request is ignored.
    pub fn answer(self: &Arc<Self>, request_id: Uuid, run_id: Uuid, offset: u64, reply_to: String) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.contains(&request_id) {
                return;
            }
            if seen.len() >= SEEN_MAX {
                seen.pop_front();
            }
            seen.push_back(request_id);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let chunk = this.read(request_id, run_id, offset).await;
            let client = {
                let token = this.shared.credential();
                let mut clients = this.clients.lock().unwrap_or_else(|p| p.into_inner());
                match clients.get(&reply_to) {
                    Some((t, c)) if *t == token => Ok(c.clone()),
                    _ => this.shared.new_client(&reply_to).map(|c| {
                        let c = c.with_timeout(Duration::from_secs(30));
                        clients.insert(reply_to.clone(), (token, c.clone()));
                        c
                    }),
                }
            };
            let sent = match client {
                Ok(c) => c.post_output(&chunk).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                tracing::debug!(%run_id, manager = %reply_to, error = %e, "output not delivered");
            }
        });
    }

    async fn read(&self, request_id: Uuid, run_id: Uuid, offset: u64) -> OutputChunk {
        let mut chunk = OutputChunk {
            request_id,
            run_id,
            node_id: self.node_id,
            offset,
            data: String::new(),
            size: 0,
            finished: false,
            error: None,
        };
        // Whether the run has ended is decided before reading, so "finished and read to the end"
        // really means there is no more output.
        // A run that wrote nothing (yet) has no log file (it is created at the first output).
        let (job, finished, silent) = match self.executor.get(run_id) {
            Some(h) if h.finished().is_none() => (h.job().to_string(), false, true),
            _ => match self.state.get_run(run_id).await {
                Ok(Some(r)) => (
                    r.job.clone(),
                    r.status != RunStatus::Running,
                    crate::executor::logs::no_output_yet(&r),
                ),
                Ok(None) => {
                    chunk.error = Some("this agent has no such run".into());
                    return chunk;
                }
                Err(e) => {
                    chunk.error = Some(format!("cannot read the run: {e}"));
                    return chunk;
                }
            },
        };
        chunk.finished = finished;
        let path = run_log_path(&self.executor.settings().log_dir, &job, run_id);
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, u64)> {
            let mut f = std::fs::File::open(&path)?;
            let size = f.metadata()?.len();
            let mut buf = Vec::new();
            if offset < size {
                f.seek(SeekFrom::Start(offset))?;
                f.take(OUTPUT_CHUNK_MAX as u64).read_to_end(&mut buf)?;
            }
            Ok((buf, size))
        })
        .await;
        match read {
            Ok(Ok((bytes, size))) => {
                chunk.size = size;
                chunk.data = base64::engine::general_purpose::STANDARD.encode(bytes);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound && silent => {}
            Ok(Err(e)) => chunk.error = Some(format!("the output file is gone: {e}")),
            Err(e) => chunk.error = Some(format!("reading the output file: {e}")),
        }
        chunk
    }
}

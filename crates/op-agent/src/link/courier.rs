//! The outbox's way to the managers: a batch goes to the manager the link is using, with the
//! node's credential and the kept client. The queue and the drain loop are the outbox's
//! ([`crate::outbox`]); this file only carries a batch and decides when to move on.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use op_proto::agent::RunBatch;
use tokio::sync::watch;

use super::{Shared, is_refusal};
use crate::outbox::{Courier, Sent};

pub struct ManagerCourier {
    shared: Arc<Shared>,
    /// True once the sync loop has registered with a manager.
    registered: watch::Receiver<bool>,
}

impl ManagerCourier {
    pub(super) fn new(shared: Arc<Shared>, registered: watch::Receiver<bool>) -> ManagerCourier {
        ManagerCourier { shared, registered }
    }
}

impl Courier for ManagerCourier {
    fn registered(&self) -> BoxFuture<'_, ()> {
        let mut registered = self.registered.clone();
        Box::pin(async move {
            // An error means the sync loop is gone (shutdown): nothing to wait for then.
            let _ = registered.wait_for(|r| *r).await;
        })
    }

    fn send<'a>(&'a self, batch: &'a RunBatch) -> BoxFuture<'a, Sent> {
        Box::pin(async move {
            let manager = self.shared.current();
            let result = match self.shared.client(&manager) {
                Ok(client) => client.post_runs(batch).await,
                Err(e) => Err(e),
            };
            // A manager that answered but could not store them (no leader yet, say) is asked
            // again; one that is gone or refuses is replaced by the next.
            if let Err(e) = &result
                && (e.is_unreachable() || is_refusal(e))
            {
                self.shared.rotate();
            }
            Sent { manager, result }
        })
    }
}

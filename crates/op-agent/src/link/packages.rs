//! Package downloads from the managers, for the deployer: `GET /v1/packages/NAME/V/content` on
//! the manager the link currently uses, resuming with Range, with the agent's token.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use op_client::{ClientError, TRANSFER_TIMEOUT};
use op_proto::package::PackageRef;

use super::Shared;
use crate::deploy::{FetchError, Opened, Source};

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
}

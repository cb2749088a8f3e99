//! Retrying a command whose hash slot is moving (`MOVED`, `ASK`) or whose cluster is down (`CLUSTERDOWN`).
//!
//! During a failover or a resharding a command can reach a master that no
//! longer serves its slot, or a cluster that refuses commands until a replica
//! has taken over (with `cluster-require-full-coverage yes`, the default).
//! Such a command did not run, so it is safe to send again once the slot map
//! has been read anew.

use std::future::Future;
use std::time::Duration;

use super::connection::is_redirect;
use super::shards::Shards;
use crate::Error;

/// How often a command whose slot is moving (or whose cluster is down) is tried again.
const REDIRECT_RETRIES: u32 = 10;
/// The first pause before trying such a command again; it doubles, up to [`REDIRECT_PAUSE_MAX`].
/// (With `cluster-require-full-coverage yes`, the default, every master refuses commands from
/// the moment a lost master is marked failed until its replica has taken over.)
const REDIRECT_PAUSE: Duration = Duration::from_millis(25);
const REDIRECT_PAUSE_MAX: Duration = Duration::from_millis(400);

/// Why one attempt of a routed command failed.
pub(crate) enum AttemptError {
    Redis(::fred::error::Error),
    Hub(Error),
}

impl From<::fred::error::Error> for AttemptError {
    fn from(e: ::fred::error::Error) -> Self {
        AttemptError::Redis(e)
    }
}

impl From<Error> for AttemptError {
    fn from(e: Error) -> Self {
        AttemptError::Hub(e)
    }
}

/// Retries `attempt` while its slot is being moved or the cluster is down, reading the slot map of
/// `shards` (if on a cluster) again in between; at most [`REDIRECT_RETRIES`] times.
pub(crate) async fn follow_redirects<T, F, Fut>(shards: Option<&Shards>, mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(AttemptError::Redis(e)) if is_redirect(&e) && tries < REDIRECT_RETRIES => {
                tries += 1;
                if let Some(shards) = shards {
                    // The dispatcher resubscribes moved channels on the topology check that follows.
                    if let Err(error) = shards.refresh(true).await {
                        tracing::debug!(%error, "reading the slot map after a redirection failed");
                    }
                }
                tokio::time::sleep((REDIRECT_PAUSE * 2u32.pow(tries - 1)).min(REDIRECT_PAUSE_MAX)).await;
            }
            Err(AttemptError::Redis(e)) => return Err(Error::backend(e)),
            Err(AttemptError::Hub(e)) => return Err(e),
        }
    }
}

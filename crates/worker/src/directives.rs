//! Directive result channels: where the outcome of a directive's task goes
//! once it is committed.
//!
//! A client leases a channel by listening on it (`GET
//! /directives/{id}/events`); tasks submitted with that directive id tell
//! how they ended there, so the client never polls its tasks one by one.
//! On one node the channel is in-process; in a cluster the worker that
//! ends a task also publishes it on the subject `colony.directive.<id>`,
//! which the worker holding the lease subscribes to. The cluster's
//! connection is `no_echo`, so a worker never hears its own publishes: its
//! own tasks reach its listeners in-process, once.
//!
//! Channels are per owner: with tokens configured, a directive id names
//! a channel of the token that submits (and listens), so no token hears
//! another's results by guessing its directive id.
//!
//! What ends while nobody listens is not kept (the task's record is): a
//! client that reconnects reads the tasks it still waits for.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use colony_core::wire::{DONE_OUTPUT_MAX, DirectiveEvent, TaskDone, TaskInfo};
use colony_core::{TaskError, TaskId, TaskState};
use futures_util::Stream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::warn;

use crate::error::{Error, Result};

/// The subject a channel's outcomes are published on in a cluster.
pub(crate) fn subject(channel: &str) -> String {
    format!("colony.directive.{channel}")
}

/// The channel of a task of `directive` (if any) submitted by `owner`.
pub(crate) fn channel_of(directive: Option<&str>, owner: Option<&str>) -> Option<String> {
    directive.map(|d| channel(d, owner))
}

/// The channel of `directive` for tasks of `owner`: the id itself
/// without tokens, else the id and a digest of the owner (one subject
/// token more).
fn channel(directive: &str, owner: Option<&str>) -> String {
    match owner {
        None => directive.to_owned(),
        Some(o) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(o.as_bytes());
            format!("{directive}.{}", &hex::encode(digest)[..16])
        }
    }
}

/// The directive channels of this worker.
#[derive(Debug, Default)]
pub struct Directives {
    /// Listeners here, by channel: (lease number, sender).
    local: Mutex<HashMap<String, (u64, mpsc::UnboundedSender<Bytes>)>>,
    leases: AtomicU64,
    /// The cluster connection, once there is one.
    nats: OnceLock<async_nats::Client>,
}

impl Directives {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Publishes outcomes to the cluster from now on.
    pub(crate) fn connect(&self, client: async_nats::Client) {
        let _ = self.nats.set(client);
    }

    /// Tells the listener of `channel` (see [`channel`]), here or (in a
    /// cluster) anywhere, that one of its tasks ended.
    pub(crate) async fn done(
        &self,
        channel: &str,
        id: &TaskId,
        state: TaskState,
        attempts: u32,
        error: Option<&TaskError>,
        output: Option<&[u8]>,
    ) {
        let done = TaskDone {
            id: id.clone(),
            state,
            attempts,
            error: error.cloned(),
            output_size: output.map(|o| o.len() as u64),
            output_base64: output
                .filter(|o| o.len() <= DONE_OUTPUT_MAX)
                .map(|o| base64::engine::general_purpose::STANDARD.encode(o)),
        };
        self.send(channel, event_line(&DirectiveEvent::Done(done)))
            .await;
    }

    /// Like [`Directives::done`], for the task `info` whose result is
    /// already in base64 (a cluster record's).
    pub(crate) async fn done_record(&self, info: &TaskInfo, output_base64: Option<&str>) {
        let Some(channel) = channel_of(info.directive.as_deref(), info.owner.as_deref()) else {
            return;
        };
        let done = TaskDone {
            id: info.id.clone(),
            state: info.state,
            attempts: info.attempts,
            error: info.error.clone(),
            output_size: info.output_size,
            output_base64: output_base64
                .filter(|_| info.output_size.unwrap_or(0) <= DONE_OUTPUT_MAX as u64)
                .map(str::to_owned),
        };
        self.send(&channel, event_line(&DirectiveEvent::Done(done)))
            .await;
    }

    async fn send(&self, channel: &str, line: Bytes) {
        if let Some((_, tx)) = self.local.lock().get(channel) {
            let _ = tx.send(line.clone());
        }
        if let Some(nats) = self.nats.get()
            && let Err(e) = nats.publish(subject(channel), line).await
        {
            warn!(cause = %e, "cannot publish a directive's task outcome");
        }
    }

    /// Leases the channel of `directive` for tasks of `owner`: its task
    /// outcomes, one JSON line each, from now on (in a cluster, once the
    /// subscription is known to the server). A newer lease of the same
    /// channel here replaces this one, whose stream then ends.
    pub async fn listen(
        self: &Arc<Self>,
        directive: &str,
        owner: Option<&str>,
    ) -> Result<Listener> {
        let channel = channel(directive, owner);
        let (tx, rx) = mpsc::unbounded_channel();
        let remote = match self.nats.get() {
            Some(nats) => {
                let sub = nats
                    .subscribe(subject(&channel))
                    .await
                    .map_err(crate::cluster::unavailable)?;
                nats.flush().await.map_err(crate::cluster::unavailable)?;
                Some(sub)
            }
            None => None,
        };
        // Numbered once subscribed: the newest lease wins.
        let lease = self.leases.fetch_add(1, Ordering::Relaxed);
        self.local.lock().insert(channel.clone(), (lease, tx));
        Ok(Listener {
            directives: self.clone(),
            channel,
            lease,
            local: rx,
            remote,
        })
    }
}

/// One JSON line of a directive's stream.
pub fn event_line(event: &DirectiveEvent) -> Bytes {
    let mut v = serde_json::to_vec(event).expect("an event serializes");
    v.push(b'\n');
    Bytes::from(v)
}

/// A leased directive channel: a stream of JSON lines; dropping it ends
/// the lease.
pub struct Listener {
    directives: Arc<Directives>,
    channel: String,
    lease: u64,
    local: mpsc::UnboundedReceiver<Bytes>,
    remote: Option<async_nats::Subscriber>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("channel", &self.channel)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Stream for Listener {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Poll::Ready(line) = self.local.poll_recv(cx) {
            // None: a newer lease took the channel.
            return Poll::Ready(line);
        }
        if let Some(remote) = self.remote.as_mut() {
            match Pin::new(remote).poll_next(cx) {
                Poll::Ready(Some(msg)) => return Poll::Ready(Some(msg.payload)),
                // The connection is closed for good.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut local = self.directives.local.lock();
        if local
            .get(&self.channel)
            .is_some_and(|(lease, _)| *lease == self.lease)
        {
            local.remove(&self.channel);
        }
    }
}

/// A directive id from the API, checked.
pub(crate) fn check(directive: &str) -> Result<()> {
    if colony_core::wire::valid_directive(directive) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "directive {directive:?}: must be 1 to 64 of A-Z a-z 0-9 _ -"
        )))
    }
}

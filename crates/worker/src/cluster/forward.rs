//! Synchronous calls a worker cannot take go by request-reply to
//! `colony.run.<function>`, where every (non-gateway) worker listens in
//! the queue group `colony-run`; NATS picks one. The connection does not
//! echo, so a call never comes back to the worker that forwarded it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use colony_core::{Failure, FunctionRef, RevisionId};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::{Nats, RUN_PREFIX, RUN_QUEUE, read_object, unavailable, write_object};
use crate::error::{Error, Result};
use crate::worker::{Invoked, Worker};

const TARGET: &str = "Colony-Target";
const REVISION: &str = "Colony-Revision";
const DURATION_US: &str = "Colony-Duration-Us";
const ERROR: &str = "Colony-Error";
/// The call's own environment (a CGI request's), JSON.
const ENV: &str = "Colony-Env";
/// The output was too large for a reply: it is this object of the data
/// store, for the caller to read and delete.
const OUTPUT_OBJECT: &str = "Colony-Output-Object";

/// How a forwarded call failed, on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Remote {
    Failed {
        failure: Failure,
        revision: RevisionId,
        duration_us: u64,
    },
    Overloaded {
        retry_after_s: u64,
    },
    /// The worker is shutting down: try another.
    Draining,
    Other {
        code: colony_core::ErrorCode,
        message: String,
    },
}

/// The largest input forwarded; larger calls run where they arrived
/// (NATS messages are limited to the server's max payload).
pub(crate) fn max_forward(nats: &Nats) -> usize {
    nats.client.server_info().max_payload.saturating_sub(4096)
}

/// Sends a call to another worker; `Ok(None)` when none listens (or
/// those that answered are shutting down).
pub(crate) async fn call(
    nats: &Nats,
    target: &FunctionRef,
    input: Bytes,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Option<Invoked>> {
    for _ in 0..3 {
        match call_once(nats, target, input.clone(), env, timeout).await {
            Err(Error::Draining) => continue,
            other => return other,
        }
    }
    Ok(None)
}

async fn call_once(
    nats: &Nats,
    target: &FunctionRef,
    input: Bytes,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Option<Invoked>> {
    let mut headers = HeaderMap::new();
    headers.insert(TARGET, target.to_string().as_str());
    if !env.is_empty() {
        let json = serde_json::to_string(env).map_err(Error::internal)?;
        headers.insert(ENV, json.as_str());
    }
    let subject = format!("{RUN_PREFIX}{}", target.name);
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(input)
        .timeout(Some(timeout));
    let reply = match nats.client.send_request(subject, request).await {
        Ok(m) => m,
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => return Ok(None),
        Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            if nats.client.connection_state() != async_nats::connection::State::Connected {
                return Err(unavailable("NATS is disconnected"));
            }
            return Err(Error::Overloaded {
                retry_after: Duration::from_secs(1),
            });
        }
        Err(e) => return Err(unavailable(e)),
    };
    let headers = reply.headers.unwrap_or_default();
    if headers.get(ERROR).is_some() {
        let remote: Remote = serde_json::from_slice(&reply.payload)
            .map_err(|e| Error::Internal(format!("unreadable forwarded error: {e}")))?;
        return Err(match remote {
            Remote::Failed {
                failure,
                revision,
                duration_us,
            } => Error::Failed {
                failure,
                revision,
                duration: Duration::from_micros(duration_us),
            },
            Remote::Overloaded { retry_after_s } => Error::Overloaded {
                retry_after: Duration::from_secs(retry_after_s),
            },
            Remote::Draining => Error::Draining,
            Remote::Other { code, message } => {
                use colony_core::ErrorCode as C;
                match code {
                    C::FunctionNotFound => Error::FunctionNotFound {
                        name: target.name.to_string(),
                    },
                    C::RevisionNotFound => Error::RevisionNotFound {
                        name: target.name.to_string(),
                        rev: target.rev.clone().unwrap_or_default(),
                    },
                    C::ClusterUnavailable => Error::ClusterUnavailable(message),
                    C::BadRequest => Error::BadRequest(message),
                    _ => Error::Internal(message),
                }
            }
        });
    }
    let revision = headers
        .get(REVISION)
        .and_then(|v| RevisionId::from_hex(v.as_str()))
        .ok_or_else(|| Error::Internal("a forwarded call's reply has no revision".into()))?;
    let output = match headers.get(OUTPUT_OBJECT) {
        None => reply.payload,
        Some(name) => {
            let name = name.as_str();
            let out = read_object(&nats.data, name)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| Error::Internal("a forwarded call's output is missing".into()))?;
            let _ = nats.data.delete(name).await;
            out
        }
    };
    let duration = headers
        .get(DURATION_US)
        .and_then(|v| v.as_str().parse().ok())
        .map(Duration::from_micros)
        .unwrap_or_default();
    Ok(Some(Invoked {
        revision,
        output,
        duration,
    }))
}

/// Answers forwarded calls for the worker's life.
pub(crate) async fn serve(nats: Nats, worker: Weak<Worker>) {
    loop {
        let sub = nats
            .client
            .queue_subscribe(format!("{RUN_PREFIX}*"), RUN_QUEUE.to_owned())
            .await;
        match sub {
            Ok(mut sub) => {
                while let Some(msg) = sub.next().await {
                    let Some(w) = worker.upgrade() else { return };
                    if w.is_draining() {
                        // Unsubscribes: NATS sends the rest elsewhere.
                        tokio::spawn(answer(nats.clone(), w, msg));
                        return;
                    }
                    tokio::spawn(answer(nats.clone(), w, msg));
                }
            }
            Err(e) => warn!(cause = %e, "cannot listen for forwarded calls; retrying"),
        }
        if worker.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn answer(nats: Nats, worker: Arc<Worker>, msg: async_nats::Message) {
    let client = nats.client.clone();
    let Some(reply) = msg.reply else { return };
    let target = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(TARGET))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    let result = match FunctionRef::parse(&target) {
        Ok(t) => {
            if let Some(rev) = t.rev.as_deref().and_then(RevisionId::from_hex) {
                worker.await_revision(&t.name, &rev).await;
            }
            let env: Vec<(String, String)> = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(ENV))
                .and_then(|v| serde_json::from_str(v.as_str()).ok())
                .unwrap_or_default();
            worker.invoke_here(&t, msg.payload, None, &env).await
        }
        Err(e) => Err(Error::from(e)),
    };
    let mut headers = HeaderMap::new();
    let payload = match result {
        Ok(done) => {
            headers.insert(REVISION, done.revision.as_str());
            headers.insert(DURATION_US, done.duration.as_micros().to_string().as_str());
            if done.output.len() > max_forward(&nats) {
                // Too large for a reply: through the object store.
                let name = format!("run-{}", colony_core::TaskId::generate());
                match write_object(&nats.data, &name, &done.output).await {
                    Ok(()) => {
                        headers.insert(OUTPUT_OBJECT, name.as_str());
                        Bytes::new()
                    }
                    Err(e) => {
                        headers.insert(ERROR, "1");
                        let remote = Remote::Other {
                            code: colony_core::ErrorCode::ClusterUnavailable,
                            message: format!("cannot pass the output back: {e}"),
                        };
                        Bytes::from(serde_json::to_vec(&remote).expect("serializes"))
                    }
                }
            } else {
                done.output
            }
        }
        Err(e) => {
            headers.insert(ERROR, "1");
            let remote = match e {
                Error::Failed {
                    failure,
                    revision,
                    duration,
                } => Remote::Failed {
                    failure,
                    revision,
                    duration_us: duration.as_micros() as u64,
                },
                Error::Overloaded { retry_after } => Remote::Overloaded {
                    retry_after_s: retry_after.as_secs().max(1),
                },
                Error::Draining => Remote::Draining,
                other => Remote::Other {
                    code: other.code(),
                    message: other.to_string(),
                },
            };
            Bytes::from(serde_json::to_vec(&remote).expect("serializes"))
        }
    };
    if let Err(e) = client.publish_with_headers(reply, headers, payload).await {
        debug!(cause = %e, "cannot answer a forwarded call");
    }
}

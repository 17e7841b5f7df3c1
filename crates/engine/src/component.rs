//! wasi:http proxy components (the world `wasmtime serve` and Spin run):
//! one pre-instantiated component per revision, a fresh instance from the
//! pool for every request.

use bytes::{Bytes, BytesMut};
use colony_core::failure::STDERR_TAIL_BYTES;
use colony_core::{Failure, Limits};
use http_body_util::{BodyExt, Full};
use tokio_util::sync::CancellationToken;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::engine::Engine;
use crate::guard::{Guard, Outcome, Stage, cancelled};
use crate::stdio::Tail;

/// Per-store state of one request.
pub(crate) struct ComponentHost {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutbound,
    guard: Guard,
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Guests make no outbound HTTP requests: the sandbox has no network, for
/// components as for modules.
struct NoOutbound;

impl WasiHttpHooks for NoOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// One HTTP request for a component.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path the component sees, with the query: `/`, `/a/b?x=1`.
    pub path_with_query: String,
    /// `host[:port]` the request was addressed to.
    pub authority: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

/// A component's response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, as the component set them.
    pub headers: Vec<(String, String)>,
    /// The body, whole.
    pub body: Bytes,
}

/// A compiled, pre-instantiated wasi:http proxy component: one per
/// revision. Every request gets a fresh instance from the pool.
pub struct HttpComponent {
    engine: Engine,
    pre: ProxyPre<ComponentHost>,
    code_sha256: String,
}

impl std::fmt::Debug for HttpComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpComponent")
            .field("code_sha256", &self.code_sha256)
            .finish_non_exhaustive()
    }
}

/// Why the response could not be read, before judging the guest.
enum BodyError {
    /// Past the output cap.
    TooLarge,
    /// The guest never set a response, set an error, or broke the body.
    Guest(String),
}

impl HttpComponent {
    pub(crate) fn new(engine: Engine, pre: ProxyPre<ComponentHost>, code_sha256: String) -> Self {
        Self {
            engine,
            pre,
            code_sha256,
        }
    }

    /// The sha256 of the component's code.
    pub fn code_sha256(&self) -> &str {
        &self.code_sha256
    }

    /// Serves one request: the component's whole response, or why it
    /// failed. `env` is the guest's environment; `limits` bound it as they
    /// bound modules (the response body counts against `output_bytes`).
    pub async fn handle(
        &self,
        request: HttpRequest,
        env: &[(String, String)],
        limits: Limits,
        cancel: Option<&CancellationToken>,
    ) -> Result<HttpResponse, Failure> {
        let internal = |what: &str, e: &dyn std::fmt::Display| Failure::Internal {
            message: format!("{what}: {e}"),
        };
        let stderr = Tail::new(STDERR_TAIL_BYTES);
        let wasi = WasiCtxBuilder::new()
            .stdout(Tail::new(STDERR_TAIL_BYTES))
            .stderr(stderr.clone())
            .envs(env)
            .build();
        let host = ComponentHost {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoOutbound,
            guard: Guard::new(&limits, cancel),
        };
        let mut store = Store::new(self.engine.wasmtime(), host);
        Guard::arm(&mut store, |h: &mut ComponentHost| &mut h.guard);
        let backstop = store.data().guard.backstop(&self.engine);

        // The path as it came (still percent-encoded); the authority from
        // the Host header, as `wasmtime serve` does.
        let path = http::uri::PathAndQuery::try_from(request.path_with_query.as_str())
            .unwrap_or_else(|_| http::uri::PathAndQuery::from_static("/"));
        let mut builder = http::Request::builder()
            .method(request.method.as_str())
            .uri(path);
        let mut has_host = false;
        for (k, v) in &request.headers {
            has_host |= k.eq_ignore_ascii_case("host");
            builder = builder.header(k.as_str(), v.as_str());
        }
        if !has_host {
            builder = builder.header("host", request.authority.as_str());
        }
        let req = builder
            .body(Full::new(request.body))
            .map_err(|e| internal("cannot build the request", &e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (req, out) = {
            let mut http = store.data_mut().http();
            let req = http
                .new_incoming_request(Scheme::Http, req)
                .map_err(|e| internal("cannot pass the request", &e))?;
            let out = http
                .new_response_outparam(tx)
                .map_err(|e| internal("cannot pass the request", &e))?;
            (req, out)
        };

        let cap = usize::try_from(limits.output_bytes).unwrap_or(usize::MAX);
        // The guest runs with the store; the response is read beside it
        // (the guest writes the body after setting the response, and
        // waits while it is not read). The guest's future drops the store
        // when it ends, which ends a body it did not finish.
        let pre = &self.pre;
        let guest = async move {
            let run = async {
                let proxy = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(Stage::Instantiate)?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
                    .map_err(Stage::Run)
            };
            let ended = run.await;
            (ended, store)
        };
        let response = async move {
            let resp = match rx.await {
                Ok(Ok(resp)) => resp,
                Ok(Err(code)) => {
                    return Err(BodyError::Guest(format!(
                        "the component answered with an error instead of a response: {}",
                        describe(&code)
                    )));
                }
                Err(_) => {
                    return Err(BodyError::Guest(
                        "the component returned without setting a response".to_owned(),
                    ));
                }
            };
            let (parts, mut body) = resp.into_parts();
            let mut buf = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    BodyError::Guest(format!("the component did not finish its body: {e:?}"))
                })?;
                if let Ok(data) = frame.into_data() {
                    if data.len() > cap - buf.len() {
                        return Err(BodyError::TooLarge);
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Ok((parts, buf.freeze()))
        };

        tokio::pin!(guest, response, backstop);
        let mut read = None;
        let (outcome, store) = loop {
            tokio::select! {
                biased;
                (ended, store) = &mut guest => break (Outcome::Done(ended), Some(store)),
                r = &mut response, if read.is_none() => {
                    // Past the cap: stop the guest now. Otherwise let it
                    // end as it will.
                    if matches!(r, Err(BodyError::TooLarge)) {
                        break (Outcome::Done(Ok(())), None);
                    }
                    read = Some(r);
                }
                () = &mut backstop => break (Outcome::Backstop, None),
                () = cancelled(cancel) => break (Outcome::Cancelled, None),
            }
        };
        let tail = || stderr.text();
        let judged = match (outcome, store) {
            (outcome, Some(store)) => {
                let judged = store.data().guard.judge(outcome, &limits, false, tail);
                // Ends a body the guest did not finish.
                drop(store);
                judged
            }
            (Outcome::Backstop, None) => Err(Failure::Timeout {
                limit_ms: limits.timeout_ms,
            }),
            (Outcome::Cancelled, None) => Err(Failure::Cancelled),
            (Outcome::Done(_), None) => Err(Failure::OutputLimit {
                limit_bytes: limits.output_bytes,
            }),
        };
        judged?;
        let read = match read {
            Some(r) => r,
            None => response.await,
        };
        match read {
            Ok((parts, body)) => Ok(HttpResponse {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body,
            }),
            Err(BodyError::TooLarge) => Err(Failure::OutputLimit {
                limit_bytes: limits.output_bytes,
            }),
            Err(BodyError::Guest(message)) => Err(Failure::Trap {
                message,
                stderr_tail: stderr.text(),
            }),
        }
    }
}

/// An error code as a guest set it, in words.
fn describe(code: &ErrorCode) -> String {
    crate::guard::bounded(format!("{code:?}"))
}

//! Prometheus metrics of one worker, in its own registry (no globals, so
//! several workers in one process, as in tests, do not mix their counts).
//!
//! Counters and histograms are updated where things happen; gauges (load,
//! cache, registry size) are read from the worker when scraped.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Label values: borrowed statics on the hot path (no allocation to
/// look a series up), owned only for function names.
type Value = Cow<'static, str>;
type Labels1 = [(&'static str, Value); 1];
type Labels2 = [(&'static str, Value); 2];
type Labels3 = [(&'static str, Value); 3];

fn owned(s: &str) -> Value {
    Cow::Owned(s.to_owned())
}

/// A status code as a `'static` label, without allocating per request.
fn status_label(code: u16) -> &'static str {
    static LABELS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        (0..600u16)
            .map(|c| &*Box::leak(c.to_string().into_boxed_str()))
            .collect()
    });
    LABELS.get(code as usize).copied().unwrap_or("other")
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 20 µs .. ~42 s
    exponential_buckets(0.000_02, 2.0, 22)
}

fn histogram_family() -> Family<Labels2, Histogram, fn() -> Histogram> {
    Family::new_with_constructor(|| Histogram::new(latency_buckets()))
}

/// A worker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    invocations: Family<Labels3, Counter>,
    invocation_seconds: Family<Labels2, Histogram, fn() -> Histogram>,
    queue_wait_seconds: Histogram,
    tasks_submitted: Family<Labels1, Counter>,
    tasks_finished: Family<Labels2, Counter>,
    task_retries: Family<Labels1, Counter>,
    http_requests: Family<Labels3, Counter>,
    http_seconds: Family<Labels2, Histogram, fn() -> Histogram>,
    pub(crate) commit_seconds: Histogram,
    pub(crate) commit_batch: Histogram,
    gauges: Gauges,
}

#[derive(Debug, Default)]
struct Gauges {
    running: Gauge,
    calls_waiting: Gauge,
    concurrency: Gauge,
    tasks_queued: Gauge,
    tasks_running: Gauge,
    functions: Gauge,
    revisions: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_bytes: Gauge,
    uptime: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// What the worker reports at scrape time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub(crate) running: usize,
    pub(crate) calls_waiting: usize,
    pub(crate) concurrency: usize,
    pub(crate) tasks_queued: usize,
    pub(crate) tasks_running: usize,
    pub(crate) functions: usize,
    pub(crate) revisions: usize,
    pub(crate) cache_hits: u64,
    pub(crate) cache_misses: u64,
    pub(crate) cache_bytes: u64,
    pub(crate) uptime_seconds: f64,
}

impl Metrics {
    pub(crate) fn new(worker_id: &str) -> Arc<Self> {
        let m = Self {
            registry: Mutex::new(Registry::default()),
            invocations: Family::default(),
            invocation_seconds: histogram_family(),
            queue_wait_seconds: Histogram::new(latency_buckets()),
            tasks_submitted: Family::default(),
            tasks_finished: Family::default(),
            task_retries: Family::default(),
            http_requests: Family::default(),
            http_seconds: histogram_family(),
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            gauges: Gauges::default(),
        };
        {
            let mut r = m.registry.lock();
            let r = r.sub_registry_with_prefix("colony");
            r.register(
                "invocations",
                "Invocations by function, kind (call or task attempt) and outcome (succeeded, an error code, or rejected)",
                m.invocations.clone(),
            );
            r.register_with_unit(
                "invocation_duration",
                "Run time of invocations by function and kind, without queueing",
                Unit::Seconds,
                m.invocation_seconds.clone(),
            );
            r.register_with_unit(
                "queue_wait",
                "Time calls waited for a slot",
                Unit::Seconds,
                m.queue_wait_seconds.clone(),
            );
            r.register(
                "tasks_submitted",
                "Tasks accepted, by function",
                m.tasks_submitted.clone(),
            );
            r.register(
                "tasks_finished",
                "Tasks that reached a final state, by function and state",
                m.tasks_finished.clone(),
            );
            r.register(
                "task_retries",
                "Task attempts queued again after a failure, by function",
                m.task_retries.clone(),
            );
            r.register(
                "http_requests",
                "HTTP requests by method, route and status",
                m.http_requests.clone(),
            );
            r.register_with_unit(
                "http_request_duration",
                "HTTP request latency by method and route",
                Unit::Seconds,
                m.http_seconds.clone(),
            );
            r.register_with_unit(
                "store_commit_duration",
                "Task store transaction commit latency (one fsync per batch)",
                Unit::Seconds,
                m.commit_seconds.clone(),
            );
            r.register(
                "store_commit_batch_size",
                "Task store writes per commit",
                m.commit_batch.clone(),
            );
            let g = &m.gauges;
            r.register(
                "running",
                "Invocations running now, calls and tasks",
                g.running.clone(),
            );
            r.register(
                "calls_waiting",
                "Calls waiting for a slot now",
                g.calls_waiting.clone(),
            );
            r.register(
                "concurrency_limit",
                "Most invocations running at once",
                g.concurrency.clone(),
            );
            r.register(
                "tasks_queued",
                "Tasks waiting to run now",
                g.tasks_queued.clone(),
            );
            r.register(
                "tasks_running",
                "Tasks running now",
                g.tasks_running.clone(),
            );
            r.register("functions", "Functions deployed", g.functions.clone());
            r.register("revisions", "Revisions deployed", g.revisions.clone());
            r.register(
                "compile_cache_hits",
                "Modules loaded from the compile cache",
                g.cache_hits.clone(),
            );
            r.register(
                "compile_cache_misses",
                "Modules compiled",
                g.cache_misses.clone(),
            );
            r.register_with_unit(
                "compile_cache_size",
                "Size of the compile cache on disk",
                Unit::Bytes,
                g.cache_bytes.clone(),
            );
            r.register_with_unit(
                "uptime",
                "Time since the worker started",
                Unit::Seconds,
                g.uptime.clone(),
            );
            r.register(
                "worker",
                "This worker",
                prometheus_client::metrics::info::Info::new([
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                    ("worker", worker_id.to_owned()),
                ]),
            );
        }
        Arc::new(m)
    }

    /// One invocation ended.
    pub(crate) fn invocation(
        &self,
        function: &str,
        kind: &'static str,
        outcome: &'static str,
        took: Option<Duration>,
    ) {
        self.invocations
            .get_or_create(&[
                ("function", owned(function)),
                ("kind", kind.into()),
                ("outcome", outcome.into()),
            ])
            .inc();
        if let Some(t) = took {
            self.invocation_seconds
                .get_or_create(&[("function", owned(function)), ("kind", kind.into())])
                .observe(t.as_secs_f64());
        }
    }

    pub(crate) fn queue_wait(&self, waited: Duration) {
        self.queue_wait_seconds.observe(waited.as_secs_f64());
    }

    pub(crate) fn task_submitted(&self, function: &str) {
        self.tasks_submitted
            .get_or_create(&[("function", owned(function))])
            .inc();
    }

    pub(crate) fn task_finished(&self, function: &str, state: &'static str) {
        self.tasks_finished
            .get_or_create(&[("function", owned(function)), ("state", state.into())])
            .inc();
    }

    pub(crate) fn task_retried(&self, function: &str) {
        self.task_retries
            .get_or_create(&[("function", owned(function))])
            .inc();
    }

    /// One HTTP request ended (the API layer calls this with its route
    /// pattern, e.g. `/run/{target}`, so the series stay few).
    pub fn http_request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        took: Duration,
    ) {
        self.http_requests
            .get_or_create(&[
                ("method", method.into()),
                ("route", route.into()),
                ("status", status_label(status).into()),
            ])
            .inc();
        self.http_seconds
            .get_or_create(&[("method", method.into()), ("route", route.into())])
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self, s: Snapshot) -> String {
        let g = &self.gauges;
        let set = |gauge: &Gauge, v: usize| {
            gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&g.running, s.running);
        set(&g.calls_waiting, s.calls_waiting);
        set(&g.concurrency, s.concurrency);
        set(&g.tasks_queued, s.tasks_queued);
        set(&g.tasks_running, s.tasks_running);
        set(&g.functions, s.functions);
        set(&g.revisions, s.revisions);
        g.cache_bytes
            .set(i64::try_from(s.cache_bytes).unwrap_or(i64::MAX));
        g.uptime.set(s.uptime_seconds);
        // Counters only go up: add what they lack.
        let hits = g.cache_hits.get();
        g.cache_hits.inc_by(s.cache_hits.saturating_sub(hits));
        let misses = g.cache_misses.get();
        g.cache_misses.inc_by(s.cache_misses.saturating_sub(misses));
        let mut out = String::with_capacity(16 << 10);
        encode(&mut out, &self.registry.lock()).expect("writing to a String cannot fail");
        out
    }
}

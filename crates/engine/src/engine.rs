//! The shared wasmtime engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tracing::{debug, info, warn};
use wasmtime::{
    Config, InstanceAllocationStrategy, Linker, Module, OptLevel, PoolingAllocationConfig,
};

use crate::cache::{Artifact, ModuleCache};
use crate::component::{ComponentHost, HttpComponent};
use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::program::{Host, Program};

/// Counters of the compile cache, for `/status` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Modules compiled by this process.
    pub compiled: u64,
    /// Modules loaded from the on-disk cache instead of compiled.
    pub cache_hits: u64,
}

/// The shared engine: wasmtime configured for pooling, async execution and
/// epoch interruption; a linker with WASI preview1; the compile cache; and a
/// thread that advances the epoch. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    wasmtime: wasmtime::Engine,
    linker: Linker<Host>,
    component_linker: wasmtime::component::Linker<ComponentHost>,
    cache: Option<ModuleCache>,
    config: EngineConfig,
    compiled: AtomicU64,
    cache_hits: AtomicU64,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(config: EngineConfig) -> Result<Self> {
        let setup = |e: &dyn std::fmt::Display| Error::Setup {
            reason: e.to_string(),
        };
        let n = config.instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        // A component holds several core instances (its code, the WASI
        // adapter, shims) and up to two memories; a module one of each.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .total_tables(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .max_tables_per_component(CORE_INSTANCES_PER_COMPONENT)
            .total_stacks(n)
            .max_memory_size(config.max_memory_bytes as usize)
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(16 << 10);
        let mut wcfg = Config::new();
        wcfg.epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .parallel_compilation(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let wasmtime = wasmtime::Engine::new(&wcfg).map_err(|e| setup(&e))?;
        let mut linker = Linker::new(&wasmtime);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.wasi)
            .map_err(|e| setup(&e))?;
        let mut component_linker = wasmtime::component::Linker::new(&wasmtime);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker).map_err(|e| setup(&e))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)
            .map_err(|e| setup(&e))?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(ModuleCache::open(dir, &wasmtime).map_err(|e| Error::Setup {
                reason: format!("cannot create the compile cache in {}: {e}", dir.display()),
            })?),
            None => None,
        };
        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_ticker(wasmtime.clone(), config.epoch_tick, stop_ticker.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                wasmtime,
                linker,
                component_linker,
                cache,
                config,
                compiled: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                stop_ticker,
            }),
        })
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Compile-cache counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            compiled: self.inner.compiled.load(Ordering::Relaxed),
            cache_hits: self.inner.cache_hits.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.wasmtime
    }

    /// Turns module bytes (binary or WAT text) into a pre-linked
    /// [`Program`]: loads the compiled artifact from the disk cache, or
    /// compiles and caches it; checks that it is a WASI command; resolves
    /// its imports once. CPU-heavy on a cache miss: call it from a blocking
    /// thread.
    pub fn prepare(&self, code: &[u8]) -> Result<Program> {
        if is_component(code) {
            return Err(Error::NotACommand {
                reason: "this is a component, not a core module; deploy wasi:http \
                         components with executor=component"
                    .to_owned(),
            });
        }
        let (module, artifact) = self.load_or_compile(code, compile)?;
        check_command(&module)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(|e| Error::NotACommand {
                reason: format!("{e:#}"),
            })?;
        let sha = self.settle(&module, artifact, "module");
        Ok(Program::new(self.clone(), pre, sha))
    }

    /// Turns component bytes into a pre-instantiated wasi:http proxy
    /// [`HttpComponent`], as [`Engine::prepare`] does for modules: from the
    /// disk cache or compiled and cached; checked to export
    /// `wasi:http/incoming-handler` and to import nothing but WASI and
    /// wasi:http. CPU-heavy on a cache miss: call it from a blocking thread.
    pub fn prepare_component(&self, code: &[u8]) -> Result<HttpComponent> {
        use wasmtime::component::Component;
        if !is_component(code) && code.starts_with(b"\0asm") {
            return Err(Error::NotAComponent {
                reason: "this is a core module; executor=component runs wasi:http proxy \
                         components (built for wasm32-wasip2, or a module made a component \
                         with wasm-tools)"
                    .to_owned(),
            });
        }
        let (component, artifact) = self.load_or_compile(code, |engine, code| {
            Component::new(engine, code).map_err(|e| Error::InvalidModule {
                reason: format!("{e:#}"),
            })
        })?;
        let pre = self
            .inner
            .component_linker
            .instantiate_pre(&component)
            .map_err(|e| Error::NotAComponent {
                reason: format!("{e:#}"),
            })?;
        let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(|e| {
            Error::NotAComponent {
                reason: format!("it does not export wasi:http/incoming-handler: {e:#}"),
            }
        })?;
        let sha = self.settle(&component, artifact, "component");
        Ok(HttpComponent::new(self.clone(), pre, sha))
    }

    /// The compiled form of `code`: from the disk cache, or by `compile`.
    fn load_or_compile<A: Artifact>(
        &self,
        code: &[u8],
        compile: impl FnOnce(&wasmtime::Engine, &[u8]) -> Result<A>,
    ) -> Result<(A, Loaded)> {
        let sha = colony_core::revision::sha256_hex(code);
        let engine = &self.inner.wasmtime;
        match self.inner.cache.as_ref().and_then(|c| c.load(engine, &sha)) {
            Some(a) => Ok((a, Loaded { sha, cached: true })),
            None => Ok((compile(engine, code)?, Loaded { sha, cached: false })),
        }
    }

    /// Once compiled code passed its checks: counts it, and caches it when
    /// it was compiled here. Returns its sha256.
    fn settle(&self, artifact: &impl Artifact, loaded: Loaded, kind: &str) -> String {
        let Loaded { sha, cached } = loaded;
        if cached {
            self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
            debug!(code = %sha, kind, "loaded compiled code from cache");
        } else {
            self.inner.compiled.fetch_add(1, Ordering::Relaxed);
            info!(code = %sha, kind, "compiled");
            if let Some(c) = &self.inner.cache {
                c.store(artifact, &sha);
            }
        }
        sha
    }

    /// Forgets the cached artifact of code that no revision uses any more.
    pub fn forget(&self, code_sha256: &str) {
        if let Some(c) = &self.inner.cache {
            c.remove(code_sha256);
        }
    }
}

/// Where compiled code came from.
struct Loaded {
    sha: String,
    cached: bool,
}

/// Core instances and tables a component may hold.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
/// Memories a component may hold.
const MEMORIES_PER_COMPONENT: u32 = 2;

/// Whether the bytes are a binary component (the layer field of the
/// preamble is 1), not a core module.
fn is_component(code: &[u8]) -> bool {
    code.len() >= 8 && code.starts_with(b"\0asm") && code[6..8] == [1, 0]
}

fn compile(engine: &wasmtime::Engine, code: &[u8]) -> Result<Module> {
    let is_binary = code.starts_with(b"\0asm");
    if !is_binary && std::str::from_utf8(code).is_err() {
        return Err(Error::InvalidModule {
            reason: "not a WebAssembly binary (no \\0asm header) and not WAT text".to_owned(),
        });
    }
    Module::new(engine, code).map_err(|e| Error::InvalidModule {
        reason: format!("{e:#}"),
    })
}

fn check_command(module: &Module) -> Result<()> {
    let start = module.get_export("_start");
    match start.as_ref().and_then(|e| e.func()) {
        Some(f) if f.params().len() == 0 && f.results().len() == 0 => Ok(()),
        Some(_) => Err(Error::NotACommand {
            reason: "`_start` must take no parameters and return nothing".to_owned(),
        }),
        None if module.get_export("_initialize").is_some() => Err(Error::NotACommand {
            reason: "the module is a WASI reactor (it exports `_initialize`, not `_start`)"
                .to_owned(),
        }),
        None => Err(Error::NotACommand {
            reason: "the module does not export a `_start` function".to_owned(),
        }),
    }
}

fn spawn_ticker(engine: wasmtime::Engine, tick: Duration, stop: Arc<AtomicBool>) -> Result<()> {
    std::thread::Builder::new()
        .name("colony-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| {
            warn!(cause = %e, "cannot start the epoch ticker");
            Error::Setup {
                reason: format!("cannot start the epoch ticker: {e}"),
            }
        })
}

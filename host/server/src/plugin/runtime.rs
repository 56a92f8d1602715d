//! The deterministic wasmtime host: one engine configured so that the same
//! component, given the same input, reaches the same result on every member,
//! compiled components cached by sha256, and one call = one fresh instance
//! with its own fuel and memory budget.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, ResourceLimiter, Store, Trap};

use super::bindings::{admission, validate, watch, Entry, KeyValue, Level, Verdict, WatchAction, WatchEvent, WriteRequest};
use super::Hook;

/// Fuel for one call when the binding names none.
pub const DEFAULT_FUEL: u64 = 10_000_000;
/// The most fuel a binding may ask for: bounds the time one call can hold
/// the apply loop.
pub const MAX_FUEL: u64 = 2_000_000_000;
/// Linear memory for one call when the binding names none.
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 16 << 20;
/// The largest memory cap a binding may ask for.
pub const MAX_MEMORY_BYTES: u64 = 128 << 20;
/// The longest deny/warn reason a plugin may return.
pub const MAX_REASON_BYTES: usize = 4096;
/// The largest event a watch plugin may return in place of the original.
pub const MAX_REPLACED_EVENT_BYTES: usize = 4 << 20;
/// Wasm stack per call. Fixed so that deep recursion fails at the same depth
/// on every member running the same build.
const MAX_WASM_STACK_BYTES: usize = 512 << 10;
/// Table elements one instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Log lines one call may emit; the rest are dropped (logging never affects
/// a decision, so dropping is safe).
const MAX_LOG_LINES_PER_CALL: usize = 16;
const MAX_LOG_LINE_BYTES: usize = 512;
/// Instances the apply engine's pool holds. Apply runs one call at a time,
/// so this never runs out there.
const POOL_COMPONENT_INSTANCES: u32 = 8;
/// Memory and table bytes per pool slot zeroed in place between calls
/// instead of being released to the kernel.
const POOL_KEEP_RESIDENT_BYTES: usize = 64 << 10;
/// Compiled components kept per engine before the cache is emptied.
const MAX_CACHED_COMPONENTS: usize = 64;

/// Why a call produced no verdict. Every kind is a pure function of the
/// component and its input: never a backtrace or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    OutOfFuel,
    MemoryLimitExceeded,
    StackOverflow,
    /// A Wasm trap, with wasmtime's fixed text for its trap code.
    Trap(String),
    /// The answer exceeded the host's size limits.
    OutputTooLarge,
    /// Linking or starting the instance failed.
    Instantiation,
}

impl Failure {
    /// The failure's kind, as the metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::OutOfFuel => "out_of_fuel",
            Failure::MemoryLimitExceeded => "memory",
            Failure::StackOverflow => "stack_overflow",
            Failure::Trap(_) => "trap",
            Failure::OutputTooLarge => "output_too_large",
            Failure::Instantiation => "instantiation",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::OutOfFuel => f.write_str("out of fuel"),
            Failure::MemoryLimitExceeded => f.write_str("memory limit exceeded"),
            Failure::StackOverflow => f.write_str("stack overflow"),
            Failure::Trap(code) => write!(f, "trap: {code}"),
            Failure::OutputTooLarge => f.write_str("output too large"),
            Failure::Instantiation => f.write_str("instantiation failed"),
        }
    }
}

/// Why a component cannot be installed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("the component does not implement the {hook} world: {detail}")]
    WrongWorld { hook: Hook, detail: String },
}

/// Fuel and memory for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    pub fuel: u64,
    pub max_memory_bytes: u64,
}

impl CallLimits {
    /// The binding's limits, with 0 meaning the default and everything
    /// clamped to what the host allows.
    pub fn resolve(fuel: u64, max_memory_bytes: u64) -> CallLimits {
        let pick = |v: u64, default: u64, max: u64| if v == 0 { default } else { v.min(max) };
        CallLimits {
            fuel: pick(fuel, DEFAULT_FUEL, MAX_FUEL),
            max_memory_bytes: pick(max_memory_bytes, DEFAULT_MAX_MEMORY_BYTES, MAX_MEMORY_BYTES),
        }
    }
}

/// Read-only access to the store at the revision being applied.
pub trait StateView: Send + Sync {
    fn get(&self, key: &[u8]) -> Option<KeyValue>;
    fn range_count(&self, key: &[u8], range_end: &[u8]) -> u64;
}

/// A state with no keys: watch calls, and local tests without a server.
pub struct EmptyState;

impl StateView for EmptyState {
    fn get(&self, _key: &[u8]) -> Option<KeyValue> {
        None
    }

    fn range_count(&self, _key: &[u8], _range_end: &[u8]) -> u64 {
        0
    }
}

/// The store data of one call.
pub struct CallState {
    limiter: MemoryCap,
    state: Arc<dyn StateView>,
    plugin: Arc<str>,
    log_lines: usize,
}

/// Caps linear memory and tables, and remembers whether the cap was hit so
/// that the resulting trap is reported as a memory failure on every member.
struct MemoryCap {
    max_memory_bytes: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.hit = true;
            // Failing the grow outright (rather than returning -1 to the
            // guest) stops a guest that would otherwise loop on retries.
            return Err(wasmtime::format_err!("memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl admission::cairn::plugin::types::Host for CallState {}

impl admission::cairn::plugin::state::Host for CallState {
    fn get(&mut self, key: Vec<u8>) -> Option<KeyValue> {
        self.state.get(&key)
    }

    fn range_count(&mut self, key: Vec<u8>, range_end: Vec<u8>) -> u64 {
        self.state.range_count(&key, &range_end)
    }
}

impl admission::cairn::plugin::log::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_lines >= MAX_LOG_LINES_PER_CALL {
            return;
        }
        self.log_lines += 1;
        let mut end = message.len().min(MAX_LOG_LINE_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &message[..end];
        let plugin = &*self.plugin;
        match level {
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// A component compiled, linked and type-checked against its hook's world,
/// ready to be instantiated once per call.
#[derive(Clone)]
pub enum Compiled {
    Admission(admission::AdmissionPre<CallState>),
    Validate(validate::ValidatePre<CallState>),
    Watch(watch::WatchPre<CallState>),
}

impl Compiled {
    pub fn hook(&self) -> Hook {
        match self {
            Compiled::Admission(_) => Hook::Admission,
            Compiled::Validate(_) => Hook::Validate,
            Compiled::Watch(_) => Hook::Watch,
        }
    }
}

/// The sha256 of a component's bytes, the cache key and the id `List` shows.
pub fn sha256(wasm: &[u8]) -> [u8; 32] {
    Sha256::digest(wasm).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where instances come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// Preallocated slots: the cheapest instantiation, for the apply loop,
    /// which makes one call at a time.
    Pooling,
    /// Allocated per instance: for callers that may run many calls at once
    /// (watch streams, install checks, local tests), where a pool could run
    /// out.
    OnDemand,
}

/// One component's compilation, shared by everyone who needs it: whoever
/// comes second waits for the first instead of compiling again.
type CompileCell = Arc<OnceLock<Result<Compiled, CompileError>>>;

/// Told the fuel each call burnt (plugin, hook, fuel), for the metrics:
/// the runtime keeps no account of its own.
pub type FuelMeter = Arc<dyn Fn(&str, Hook, u64) + Send + Sync>;

/// One wasmtime engine with its linkers and compiled-component cache.
pub struct Runtime {
    engine: Engine,
    admission: Linker<CallState>,
    validate: Linker<CallState>,
    watch: Linker<CallState>,
    cache: Mutex<HashMap<([u8; 32], Hook), CompileCell>>,
    fuel_meter: Option<FuelMeter>,
}

/// The engine settings every member must share: they are part of the
/// replicated behaviour, not tuning.
fn deterministic_config(allocation: Allocation) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(true);
    config.cranelift_nan_canonicalization(true);
    // Threads need wasmtime's `threads` feature, which is not enabled: the
    // proposal cannot be turned on.
    config.wasm_relaxed_simd(false);
    config.relaxed_simd_deterministic(true);
    config.max_wasm_stack(MAX_WASM_STACK_BYTES);
    // With copy-on-write images the fuel charged while instantiating
    // differs between platforms.
    config.memory_init_cow(false);
    config.cranelift_opt_level(OptLevel::Speed);
    if allocation == Allocation::Pooling {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_COMPONENT_INSTANCES);
        pool.total_core_instances(POOL_COMPONENT_INSTANCES * 8);
        pool.total_memories(POOL_COMPONENT_INSTANCES * 2);
        pool.total_tables(POOL_COMPONENT_INSTANCES * 4);
        pool.max_memory_size(MAX_MEMORY_BYTES as usize);
        // Resetting a slot's first pages with memset is much cheaper than
        // returning them to the kernel after every call.
        pool.linear_memory_keep_resident(POOL_KEEP_RESIDENT_BYTES);
        pool.table_keep_resident(POOL_KEEP_RESIDENT_BYTES);
        // Where the kernel can say which pages a call dirtied (Linux 6.7+),
        // only those are zeroed.
        pool.pagemap_scan(Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl Runtime {
    pub fn new(allocation: Allocation) -> Result<Runtime, String> {
        let engine = Engine::new(&deterministic_config(allocation)).map_err(|e| format!("creating the wasm engine: {e}"))?;
        let linker_error = |e: wasmtime::Error| format!("linking the plugin imports: {e}");
        let mut admission = Linker::new(&engine);
        admission::Admission::add_to_linker::<_, HasSelf<CallState>>(&mut admission, |s| s).map_err(linker_error)?;
        let mut validate = Linker::new(&engine);
        validate::Validate::add_to_linker::<_, HasSelf<CallState>>(&mut validate, |s| s).map_err(linker_error)?;
        let mut watch = Linker::new(&engine);
        watch::Watch::add_to_linker::<_, HasSelf<CallState>>(&mut watch, |s| s).map_err(linker_error)?;
        Ok(Runtime {
            engine,
            admission,
            validate,
            watch,
            cache: Mutex::new(HashMap::new()),
            fuel_meter: None,
        })
    }

    /// Reports every call's fuel to `meter`.
    pub fn with_fuel_meter(mut self, meter: FuelMeter) -> Self {
        self.fuel_meter = Some(meter);
        self
    }

    /// Tells the meter what the call that ran in `store` burnt.
    fn meter(&self, store: &Store<CallState>, plugin: &str, hook: Hook, limits: CallLimits) {
        if let Some(meter) = &self.fuel_meter {
            let left = store.get_fuel().unwrap_or(0);
            meter(plugin, hook, limits.fuel.saturating_sub(left));
        }
    }

    /// Compiles `wasm` for `hook`, or returns the cached result for the same
    /// bytes. Checks that it is a component whose imports this host provides
    /// and whose exports are the hook's world.
    pub fn compile(&self, wasm: &[u8], hook: Hook) -> Result<Compiled, CompileError> {
        self.compile_with_sha(&sha256(wasm), wasm, hook)
    }

    /// [`Runtime::compile`] for callers that know the bytes' sha256 already
    /// (hashing a large component on every call would cost more than the
    /// call).
    pub fn compile_with_sha(&self, sha: &[u8; 32], wasm: &[u8], hook: Hook) -> Result<Compiled, CompileError> {
        let cell = {
            let mut cache = self.cache.lock();
            if cache.len() >= MAX_CACHED_COMPONENTS {
                cache.clear();
            }
            cache.entry((*sha, hook)).or_default().clone()
        };
        cell.get_or_init(|| self.compile_uncached(wasm, hook)).clone()
    }

    fn compile_uncached(&self, wasm: &[u8], hook: Hook) -> Result<Compiled, CompileError> {
        let component = Component::new(&self.engine, wasm).map_err(|e| CompileError::Invalid(first_line(&e)))?;
        let wrong_world = |e: wasmtime::Error| CompileError::WrongWorld {
            hook,
            detail: first_line(&e),
        };
        Ok(match hook {
            Hook::Admission => {
                let pre = self.admission.instantiate_pre(&component).map_err(wrong_world)?;
                Compiled::Admission(admission::AdmissionPre::new(pre).map_err(wrong_world)?)
            }
            Hook::Validate => {
                let pre = self.validate.instantiate_pre(&component).map_err(wrong_world)?;
                Compiled::Validate(validate::ValidatePre::new(pre).map_err(wrong_world)?)
            }
            Hook::Watch => {
                let pre = self.watch.instantiate_pre(&component).map_err(wrong_world)?;
                Compiled::Watch(watch::WatchPre::new(pre).map_err(wrong_world)?)
            }
        })
    }

    /// Drops compiled components no binding uses any more.
    pub fn retain(&self, live: impl Fn(&[u8; 32]) -> bool) {
        self.cache.lock().retain(|(sha, _), _| live(sha));
    }

    fn store(&self, plugin: &str, limits: CallLimits, state: Arc<dyn StateView>) -> Store<CallState> {
        let mut store = Store::new(
            &self.engine,
            CallState {
                limiter: MemoryCap {
                    max_memory_bytes: usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX),
                    hit: false,
                },
                state,
                plugin: plugin.into(),
                log_lines: 0,
            },
        );
        store.limiter(|s| &mut s.limiter);
        // Fuel is enabled on every engine this type builds, so this cannot
        // fail; a failure would only mean a call without a budget, which the
        // call's own error handling then reports.
        let _ = store.set_fuel(limits.fuel);
        store
    }

    /// Runs an admission component's `admit` in a fresh instance.
    pub fn admit(
        &self,
        compiled: &Compiled,
        plugin: &str,
        limits: CallLimits,
        config: &[u8],
        request: &WriteRequest,
        state: Arc<dyn StateView>,
    ) -> Result<Verdict, Failure> {
        let Compiled::Admission(pre) = compiled else {
            return Err(Failure::Instantiation);
        };
        let mut store = self.store(plugin, limits, state);
        let verdict = pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, &e, true))
            .and_then(|instance| {
                instance
                    .call_admit(&mut store, config, request)
                    .map_err(|e| classify(&store, &e, false))
            });
        self.meter(&store, plugin, Hook::Admission, limits);
        check_verdict(verdict?)
    }

    /// Runs a validate component's `validate` in a fresh instance.
    pub fn validate(
        &self,
        compiled: &Compiled,
        plugin: &str,
        limits: CallLimits,
        config: &[u8],
        entry: &Entry,
        state: Arc<dyn StateView>,
    ) -> Result<Verdict, Failure> {
        let Compiled::Validate(pre) = compiled else {
            return Err(Failure::Instantiation);
        };
        let mut store = self.store(plugin, limits, state);
        let verdict = pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, &e, true))
            .and_then(|instance| {
                instance
                    .call_validate(&mut store, config, entry)
                    .map_err(|e| classify(&store, &e, false))
            });
        self.meter(&store, plugin, Hook::Validate, limits);
        check_verdict(verdict?)
    }

    /// Runs a watch component's `transform` in a fresh instance.
    pub fn transform(
        &self,
        compiled: &Compiled,
        plugin: &str,
        limits: CallLimits,
        config: &[u8],
        event: &WatchEvent,
    ) -> Result<WatchAction, Failure> {
        let Compiled::Watch(pre) = compiled else {
            return Err(Failure::Instantiation);
        };
        let mut store = self.store(plugin, limits, Arc::new(EmptyState));
        let action = pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, &e, true))
            .and_then(|instance| {
                instance
                    .call_transform(&mut store, config, event)
                    .map_err(|e| classify(&store, &e, false))
            });
        self.meter(&store, plugin, Hook::Watch, limits);
        let action = action?;
        if let WatchAction::Replace(e) = &action {
            if event_size(e) > MAX_REPLACED_EVENT_BYTES {
                return Err(Failure::OutputTooLarge);
            }
        }
        Ok(action)
    }
}

fn check_verdict(verdict: Verdict) -> Result<Verdict, Failure> {
    match &verdict {
        Verdict::Deny(r) | Verdict::Warn(r) if r.len() > MAX_REASON_BYTES => Err(Failure::OutputTooLarge),
        _ => Ok(verdict),
    }
}

fn event_size(e: &WatchEvent) -> usize {
    let kv = |kv: &KeyValue| kv.key.len() + kv.value.len();
    kv(&e.kv) + e.prev_kv.as_ref().map_or(0, kv)
}

/// Maps a wasmtime error to its deterministic kind. The error's own text
/// (backtraces, addresses) is only logged.
fn classify(store: &Store<CallState>, e: &wasmtime::Error, instantiating: bool) -> Failure {
    let failure = if store.data().limiter.hit {
        Failure::MemoryLimitExceeded
    } else {
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Failure::OutOfFuel,
            Some(Trap::StackOverflow) => Failure::StackOverflow,
            Some(trap) => {
                let text = trap.to_string();
                Failure::Trap(text.strip_prefix("wasm trap: ").unwrap_or(&text).to_string())
            }
            None if instantiating => Failure::Instantiation,
            // Host-side errors while lowering or lifting values, e.g. a
            // string that is not valid UTF-8 or an out-of-bounds pointer:
            // both depend only on the guest's memory.
            None => Failure::Trap("invalid value returned".into()),
        }
    };
    tracing::debug!(plugin = %store.data().plugin, kind = %failure, error = ?e, "plugin call failed");
    failure
}

fn first_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    text.lines().next().unwrap_or_default().to_string()
}

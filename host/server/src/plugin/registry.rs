//! The replicated plugin registry. Bindings live in the meta column family
//! under `plugin/binding/<name>`, so Raft snapshots carry them like any other
//! replicated record, and they change only when apply reaches an install or
//! remove entry: every member switches at the same log index.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use prost::Message;
use rocksdb::{IteratorMode, WriteBatch};

use super::runtime::{self, Allocation, CallLimits, Compiled, Runtime};
use super::Hook;
use crate::error::{Error, Result};
use crate::mvcc::KeyRange;
use crate::proto::cairnpb::{PluginBinding, PluginFailurePolicy, PluginInfo, PluginMode, PluginRecord};
use crate::storage::schema::META_PLUGIN_BINDING_PREFIX;
use crate::storage::{Database, CF_META};

const BINDING_PREFIX: &[u8] = META_PLUGIN_BINDING_PREFIX;
/// Names are printed in errors and logs and used as keys: keep them plain.
const MAX_NAME_BYTES: usize = 128;
/// Config blobs travel with every call.
const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Size limit for components when the server is given none.
pub const DEFAULT_MAX_PLUGIN_BYTES: usize = 8 << 20;

fn binding_key(name: &str) -> Vec<u8> {
    [BINDING_PREFIX, name.as_bytes()].concat()
}

/// What one member saw of one binding; for `plugin list`, never for a
/// decision.
#[derive(Default)]
pub struct Stats {
    pub calls: AtomicU64,
    pub denials: AtomicU64,
    pub failures: AtomicU64,
}

/// One binding as the hooks use it.
pub struct Binding {
    pub stats: Stats,
    binding: PluginBinding,
    pub installed_index: u64,
    pub name: String,
    pub hook: Hook,
    pub range: KeyRange,
    pub limits: CallLimits,
    pub mode: PluginMode,
    pub policy: PluginFailurePolicy,
    pub sha256: [u8; 32],
}

impl Binding {
    fn new(record: PluginRecord) -> Result<Binding> {
        let binding = record
            .binding
            .ok_or_else(|| Error::Corrupt("plugin record without binding".into()))?;
        let hook = Hook::from_proto(binding.hook).ok_or_else(|| Error::Corrupt(format!("plugin {:?} has no hook", binding.name)))?;
        Ok(Binding {
            stats: Stats::default(),
            name: binding.name.clone(),
            hook,
            range: KeyRange::new(&binding.key, &binding.range_end),
            limits: CallLimits::resolve(binding.fuel, binding.max_memory_bytes),
            mode: PluginMode::try_from(binding.mode).unwrap_or(PluginMode::Enforce),
            policy: PluginFailurePolicy::try_from(binding.failure_policy).unwrap_or(PluginFailurePolicy::Fail),
            sha256: runtime::sha256(&binding.wasm),
            installed_index: record.installed_index,
            binding,
        })
    }

    pub fn binding(&self) -> &PluginBinding {
        &self.binding
    }

    pub fn info(&self) -> PluginInfo {
        let b = self.binding();
        PluginInfo {
            name: b.name.clone(),
            hook: b.hook,
            key: b.key.clone(),
            range_end: b.range_end.clone(),
            config: b.config.clone(),
            failure_policy: b.failure_policy,
            mode: b.mode,
            fuel: self.limits.fuel,
            max_memory_bytes: self.limits.max_memory_bytes,
            sha256: runtime::hex(&self.sha256),
            size_bytes: b.wasm.len() as u64,
            installed_index: self.installed_index,
            calls: self.stats.calls.load(Ordering::Relaxed),
            denials: self.stats.denials.load(Ordering::Relaxed),
            failures: self.stats.failures.load(Ordering::Relaxed),
        }
    }
}

/// The bindings in force, by name (the order hooks run them in).
#[derive(Default)]
pub struct Registry {
    pub bindings: BTreeMap<String, Arc<Binding>>,
}

impl Registry {
    pub fn of(&self, hook: Hook) -> impl Iterator<Item = &Arc<Binding>> {
        self.bindings.values().filter(move |b| b.hook == hook)
    }
}

/// The plugin registry and the engines that run its plugins.
pub struct Plugins {
    /// Runs admission and validate calls; only the apply loop uses it.
    pub(super) apply: Arc<Runtime>,
    /// Runs watch calls, from many tasks at once.
    pub(super) serve: Arc<Runtime>,
    registry: RwLock<Arc<Registry>>,
}

impl Plugins {
    /// Opens the registry stored in `engine`.
    pub fn open(engine: &Database) -> Result<Arc<Plugins>> {
        let runtime_error = Error::PluginEngine;
        let meter: runtime::FuelMeter = Arc::new(|plugin: &str, hook: Hook, fuel: u64| {
            crate::metrics::metrics().plugins.fuel(plugin, &hook.to_string(), fuel);
        });
        let plugins = Plugins {
            apply: Arc::new(
                Runtime::new(Allocation::Pooling)
                    .map_err(runtime_error)?
                    .with_fuel_meter(meter.clone()),
            ),
            serve: Arc::new(Runtime::new(Allocation::OnDemand).map_err(runtime_error)?.with_fuel_meter(meter)),
            registry: RwLock::new(Arc::new(Registry::default())),
        };
        plugins.reload(engine)?;
        Ok(Arc::new(plugins))
    }

    /// Re-reads the bindings, after start-up or a snapshot install.
    pub fn reload(&self, engine: &Database) -> Result<()> {
        let mut registry = Registry::default();
        let db = engine.db();
        let mode = IteratorMode::From(BINDING_PREFIX, rocksdb::Direction::Forward);
        for item in db.iterator_cf(engine.cf(CF_META), mode) {
            let (k, v) = item?;
            if !k.starts_with(BINDING_PREFIX) {
                break;
            }
            let bound = Binding::new(PluginRecord::decode(&*v)?)?;
            self.precompile(&bound);
            registry.bindings.insert(bound.name.clone(), Arc::new(bound));
        }
        self.replace(registry);
        Ok(())
    }

    fn replace(&self, registry: Registry) {
        let live: Vec<[u8; 32]> = registry.bindings.values().map(|b| b.sha256).collect();
        *self.registry.write() = Arc::new(registry);
        self.apply.retain(|sha| live.contains(sha));
        self.serve.retain(|sha| live.contains(sha));
    }

    /// The bindings in force now.
    pub fn current(&self) -> Arc<Registry> {
        self.registry.read().clone()
    }

    pub fn list(&self) -> Vec<PluginInfo> {
        self.current().bindings.values().map(|b| b.info()).collect()
    }

    /// The checks the receiving member makes before proposing an install:
    /// the deterministic ones apply repeats, plus this member's size limit.
    pub fn check_install(&self, binding: &PluginBinding, max_plugin_bytes: usize) -> Result<()> {
        if binding.wasm.len() > max_plugin_bytes {
            return Err(Error::PluginInvalid(format!(
                "the component is {} bytes, more than the limit of {max_plugin_bytes} bytes (--max-plugin-bytes)",
                binding.wasm.len()
            )));
        }
        let hook = check_binding(binding)?;
        self.runtime_for(hook)
            .compile(&binding.wasm, hook)
            .map_err(|e| Error::PluginInvalid(e.to_string()))?;
        Ok(())
    }

    /// The engine that runs `hook`'s calls.
    fn runtime_for(&self, hook: Hook) -> &Arc<Runtime> {
        match hook {
            Hook::Admission | Hook::Validate => &self.apply,
            Hook::Watch => &self.serve,
        }
    }

    /// Compiles a binding's component on a thread of its own, so that a
    /// large component does not hold up the apply loop (and with it Raft);
    /// the first call waits for it if it is not done yet.
    fn precompile(&self, bound: &Binding) {
        let runtime = self.runtime_for(bound.hook).clone();
        let (sha, wasm, hook) = (bound.sha256, bound.binding().wasm.clone(), bound.hook);
        let spawned = std::thread::Builder::new().name("plugin-compile".into()).spawn(move || {
            if let Err(e) = runtime.compile_with_sha(&sha, &wasm, hook) {
                tracing::error!(error = %e, "a stored plugin does not compile");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot compile a plugin in the background; its first call will");
        }
    }

    /// Applies an install (or upgrade) at Raft index `index`. The binding's
    /// fields are checked again, deterministically; the component was
    /// compiled and type-checked by the proposing member, which runs the
    /// same build, so it is only compiled here in the background.
    pub fn apply_install(
        &self,
        engine: &Database,
        binding: &PluginBinding,
        index: u64,
        extra: impl FnOnce(&mut WriteBatch),
    ) -> Result<PluginInfo> {
        check_binding(binding)?;
        let record = PluginRecord {
            binding: Some(binding.clone()),
            installed_index: index,
        };
        let encoded = record.encode_to_vec();
        let bound = Binding::new(record)?;
        self.precompile(&bound);
        let mut batch = WriteBatch::default();
        batch.put_cf(engine.cf(CF_META), binding_key(&binding.name), encoded);
        extra(&mut batch);
        engine.write(batch, false)?;
        let info = bound.info();
        let mut registry = Registry {
            bindings: self.current().bindings.clone(),
        };
        registry.bindings.insert(bound.name.clone(), Arc::new(bound));
        self.replace(registry);
        tracing::info!(plugin = %info.name, index, sha256 = %info.sha256, "plugin installed");
        Ok(info)
    }

    /// Applies a removal at its Raft index.
    pub fn apply_remove(&self, engine: &Database, name: &str, extra: impl FnOnce(&mut WriteBatch)) -> Result<()> {
        let mut registry = Registry {
            bindings: self.current().bindings.clone(),
        };
        if registry.bindings.remove(name).is_none() {
            return Err(Error::PluginNotFound(name.to_string()));
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(engine.cf(CF_META), binding_key(name));
        extra(&mut batch);
        engine.write(batch, false)?;
        self.replace(registry);
        tracing::info!(plugin = %name, "plugin removed");
        Ok(())
    }

    /// The compiled form of `bound` on `runtime` (cached by sha256).
    pub(super) fn compiled(runtime: &Runtime, bound: &Binding) -> std::result::Result<Compiled, runtime::CompileError> {
        runtime.compile_with_sha(&bound.sha256, &bound.binding().wasm, bound.hook)
    }
}

/// The checks that depend only on the binding's fields, so every member
/// reaches the same answer quickly; returns the hook.
fn check_binding(binding: &PluginBinding) -> Result<Hook> {
    let invalid = |m: String| Err(Error::PluginInvalid(m));
    let name = &binding.name;
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return invalid(format!("a plugin name must be 1 to {MAX_NAME_BYTES} bytes"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return invalid(format!("plugin name {name:?} may only use letters, digits, '-', '_' and '.'"));
    }
    let Some(hook) = Hook::from_proto(binding.hook) else {
        return invalid("the hook must be admission, validate or watch".into());
    };
    if binding.key.is_empty() {
        return invalid("the bound key range must not be empty (use --prefix)".into());
    }
    if binding.config.len() > MAX_CONFIG_BYTES {
        return invalid(format!("the config is larger than {MAX_CONFIG_BYTES} bytes"));
    }
    if PluginMode::try_from(binding.mode).is_err() {
        return invalid("unknown mode".into());
    }
    if PluginFailurePolicy::try_from(binding.failure_policy).is_err() {
        return invalid("unknown failure policy".into());
    }
    Ok(hook)
}

//! `cairnctl plugin ...`: install, list and remove plugins through the
//! `cairnpb.Plugins` service, and run a plugin locally on sample input
//! (`plugin test`) with the same engine settings the server uses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use tonic::transport::{Channel, Endpoint};

use cairn::plugin::bindings::{
    Entry, EventKind, Identity, KeyValue as WitKv, Mutation, PutOp, RequestKind, WatchAction, WatchEvent, WriteRequest,
};
use cairn::plugin::runtime::{Allocation, CallLimits, Runtime, StateView};
use cairn::plugin::{Hook, Verdict};
use cairn_proto::cairnpb::plugins_client::PluginsClient;
use cairn_proto::cairnpb::{
    PluginBinding, PluginFailurePolicy, PluginHook, PluginInfo, PluginInstallRequest, PluginListRequest, PluginMode, PluginRemoveRequest,
};
use cairn_proto::prefix_end;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum HookArg {
    Admission,
    Validate,
    Watch,
}

impl HookArg {
    fn hook(self) -> Hook {
        match self {
            HookArg::Admission => Hook::Admission,
            HookArg::Validate => Hook::Validate,
            HookArg::Watch => Hook::Watch,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PolicyArg {
    Fail,
    Ignore,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    Enforce,
    Warn,
    DryRun,
}

#[derive(Clone, Subcommand)]
pub enum PluginCommand {
    /// Installs (or upgrades, under the same name) a plugin bound to a key prefix or range.
    Install(InstallArgs),
    /// Lists the installed plugins.
    List,
    /// Removes a plugin.
    Remove { name: String },
    /// Runs a plugin locally on sample input, without a server. Each --put and
    /// --delete is one mutation (admission sees them as one request), one
    /// validated key-value (validate) or one event (watch).
    Test(TestArgs),
}

#[derive(Clone, Args)]
pub struct InstallArgs {
    name: String,
    /// The component (.wasm).
    file: PathBuf,
    #[arg(long, value_enum)]
    hook: HookArg,
    /// Keys the plugin applies to: every key starting with this prefix.
    #[arg(long, required_unless_present = "key", conflicts_with_all = ["key", "range_end"])]
    prefix: Option<String>,
    /// Instead of --prefix: the one key the plugin applies to, or with
    /// --range-end the start of the range [KEY, RANGE_END).
    #[arg(long)]
    key: Option<String>,
    /// The end of the range (exclusive).
    #[arg(long, requires = "key")]
    range_end: Option<String>,
    /// With --key: every key from KEY on (etcdctl's --from-key).
    #[arg(long, requires = "key", conflicts_with = "range_end")]
    from_key: bool,
    /// The config blob handed to the plugin, from this file.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "fail")]
    failure_policy: PolicyArg,
    #[arg(long, value_enum, default_value = "enforce")]
    mode: ModeArg,
    /// Fuel per call (0: the server's default).
    #[arg(long, default_value_t = 0)]
    fuel: u64,
    /// Linear memory cap per call, in bytes (0: the server's default).
    #[arg(long, default_value_t = 0)]
    max_memory: u64,
}

#[derive(Clone, Args)]
pub struct TestArgs {
    /// The component (.wasm).
    file: PathBuf,
    #[arg(long, value_enum)]
    hook: HookArg,
    /// The config blob handed to the plugin, from this file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A put, as KEY=VALUE (repeatable).
    #[arg(long = "put", value_name = "KEY=VALUE")]
    puts: Vec<String>,
    /// A delete of one key (repeatable; admission and watch).
    #[arg(long = "delete", value_name = "KEY")]
    deletes: Vec<String>,
    /// A key the plugin's state import sees, as KEY=VALUE (repeatable).
    #[arg(long = "state", value_name = "KEY=VALUE")]
    state: Vec<String>,
    /// The revision the request is applied at (admission).
    #[arg(long, default_value_t = 1)]
    revision: i64,
    /// The caller's user name (admission).
    #[arg(long, default_value = "")]
    user: String,
    #[arg(long, default_value_t = 0)]
    fuel: u64,
    #[arg(long, default_value_t = 0)]
    max_memory: u64,
}

async fn connect(endpoints: &[String], timeout: Duration) -> anyhow::Result<PluginsClient<Channel>> {
    let mut last = None;
    for ep in endpoints {
        let url = if ep.contains("://") { ep.clone() } else { format!("http://{ep}") };
        let endpoint = Endpoint::from_shared(url.clone()).with_context(|| format!("invalid endpoint {url}"))?;
        match endpoint.connect_timeout(timeout).timeout(timeout).connect().await {
            Ok(channel) => return Ok(PluginsClient::new(channel).max_encoding_message_size(usize::MAX)),
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("cannot reach {url}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no endpoints given")))
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

fn read_config(path: &Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    match path {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display())),
        None => Ok(Vec::new()),
    }
}

/// Runs a `plugin` subcommand; `Ok(false)` means the command ran and its
/// answer was negative (a denial or failure under `test`).
pub async fn run(command: PluginCommand, endpoints: &[String], timeout: Duration) -> anyhow::Result<bool> {
    match command {
        PluginCommand::Install(a) => install(a, endpoints, timeout).await,
        PluginCommand::List => {
            let resp = connect(endpoints, timeout)
                .await?
                .list(PluginListRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            for p in &resp.plugins {
                println!("{}", describe(p));
            }
            Ok(true)
        }
        PluginCommand::Remove { name } => {
            connect(endpoints, timeout)
                .await?
                .remove(PluginRemoveRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            println!("plugin {name} removed");
            Ok(true)
        }
        PluginCommand::Test(a) => tokio::task::spawn_blocking(move || test(a)).await?,
    }
}

async fn install(a: InstallArgs, endpoints: &[String], timeout: Duration) -> anyhow::Result<bool> {
    let wasm = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let (bound_key, bound_end) = match (&a.prefix, &a.key) {
        (Some(prefix), _) => (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes())),
        // etcd's convention: a range end of the single byte 0 means "to the
        // end of the keyspace", which no command-line argument can carry.
        (None, Some(key)) if a.from_key => (key.as_bytes().to_vec(), vec![0]),
        (None, Some(key)) => (key.as_bytes().to_vec(), a.range_end.clone().unwrap_or_default().into_bytes()),
        (None, None) => anyhow::bail!("give --prefix, or --key (with an optional --range-end)"),
    };
    let binding = PluginBinding {
        name: a.name,
        wasm,
        hook: a.hook.hook().to_proto() as i32,
        key: bound_key,
        range_end: bound_end,
        config: read_config(&a.config)?,
        failure_policy: match a.failure_policy {
            PolicyArg::Fail => PluginFailurePolicy::Fail,
            PolicyArg::Ignore => PluginFailurePolicy::Ignore,
        } as i32,
        mode: match a.mode {
            ModeArg::Enforce => PluginMode::Enforce,
            ModeArg::Warn => PluginMode::Warn,
            ModeArg::DryRun => PluginMode::DryRun,
        } as i32,
        fuel: a.fuel,
        max_memory_bytes: a.max_memory,
    };
    let resp = connect(endpoints, timeout)
        .await?
        .install(PluginInstallRequest { plugin: Some(binding) })
        .await
        .map_err(status_error)?
        .into_inner();
    match resp.plugin {
        Some(p) => println!("installed {}", describe(&p)),
        None => println!("installed"),
    }
    Ok(true)
}

fn describe(p: &PluginInfo) -> String {
    let hook = match PluginHook::try_from(p.hook) {
        Ok(PluginHook::Admission) => "admission",
        Ok(PluginHook::Validate) => "validate",
        Ok(PluginHook::Watch) => "watch",
        _ => "unknown",
    };
    let mode = match PluginMode::try_from(p.mode) {
        Ok(PluginMode::Warn) => "warn",
        Ok(PluginMode::DryRun) => "dry-run",
        _ => "enforce",
    };
    let policy = match PluginFailurePolicy::try_from(p.failure_policy) {
        Ok(PluginFailurePolicy::Ignore) => "ignore",
        _ => "fail",
    };
    format!(
        "{} hook={hook} key={:?} range-end={:?} mode={mode} failure-policy={policy} fuel={} max-memory={} sha256={} size={} index={} calls={} denials={} failures={}",
        p.name,
        String::from_utf8_lossy(&p.key),
        String::from_utf8_lossy(&p.range_end),
        p.fuel,
        p.max_memory_bytes,
        p.sha256,
        p.size_bytes,
        p.installed_index,
        p.calls,
        p.denials,
        p.failures
    )
}

/// Keys given with --state, served to the plugin's state import.
struct SampleState(Vec<(Vec<u8>, Vec<u8>)>);

impl StateView for SampleState {
    fn get(&self, key: &[u8]) -> Option<WitKv> {
        self.0.iter().find(|(k, _)| k == key).map(|(k, v)| sample_kv(k, v))
    }

    fn range_count(&self, key: &[u8], range_end: &[u8]) -> u64 {
        let range = cairn::mvcc::KeyRange::new(key, range_end);
        self.0.iter().filter(|(k, _)| range.contains(k)).count() as u64
    }
}

fn sample_kv(k: &[u8], v: &[u8]) -> WitKv {
    WitKv {
        key: k.to_vec(),
        value: v.to_vec(),
        create_revision: 1,
        mod_revision: 1,
        version: 1,
        lease: 0,
    }
}

fn split_pair(s: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.as_bytes().to_vec(), v.as_bytes().to_vec())),
        _ => bail!("expected KEY=VALUE, got {s:?}"),
    }
}

fn verdict_line(v: &Verdict) -> (String, bool) {
    match v {
        Verdict::Allow => ("allow".into(), true),
        Verdict::Warn(r) => (format!("warn: {r}"), true),
        Verdict::Deny(r) => (format!("deny: {r}"), false),
    }
}

fn test(a: TestArgs) -> anyhow::Result<bool> {
    let wasm = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let config = read_config(&a.config)?;
    let runtime = Runtime::new(Allocation::OnDemand).map_err(anyhow::Error::msg)?;
    let hook = a.hook.hook();
    let compiled = runtime.compile(&wasm, hook)?;
    let limits = CallLimits::resolve(a.fuel, a.max_memory);
    let puts = a.puts.iter().map(|p| split_pair(p)).collect::<anyhow::Result<Vec<_>>>()?;
    let state: Arc<dyn StateView> = Arc::new(SampleState(
        a.state.iter().map(|p| split_pair(p)).collect::<anyhow::Result<Vec<_>>>()?,
    ));
    let mut all_allowed = true;
    let mut report = |line: String, ok: bool| {
        println!("{line}");
        all_allowed &= ok;
    };
    match hook {
        Hook::Admission => {
            let mut mutations: Vec<Mutation> = puts
                .iter()
                .map(|(k, v)| {
                    Mutation::Put(PutOp {
                        key: k.clone(),
                        value: v.clone(),
                        lease: 0,
                    })
                })
                .collect();
            mutations.extend(a.deletes.iter().map(|k| {
                Mutation::DeleteRange(cairn::plugin::bindings::DeleteOp {
                    key: k.as_bytes().to_vec(),
                    range_end: Vec::new(),
                })
            }));
            let kind = match (mutations.len(), mutations.first()) {
                (1, Some(Mutation::Put(_))) => RequestKind::Put,
                (1, Some(Mutation::DeleteRange(_))) => RequestKind::DeleteRange,
                _ => RequestKind::Txn,
            };
            let request = WriteRequest {
                kind,
                mutations,
                identity: Identity { user: a.user.clone() },
                revision: a.revision,
            };
            match runtime.admit(&compiled, "test", limits, &config, &request, state) {
                Ok(v) => {
                    let (line, ok) = verdict_line(&v);
                    report(line, ok);
                }
                Err(f) => report(format!("failed: {f}"), false),
            }
        }
        Hook::Validate => {
            for (k, v) in &puts {
                let entry = Entry {
                    key: k.clone(),
                    value: v.clone(),
                    lease: 0,
                };
                let key = String::from_utf8_lossy(k);
                match runtime.validate(&compiled, "test", limits, &config, &entry, state.clone()) {
                    Ok(v) => {
                        let (line, ok) = verdict_line(&v);
                        report(format!("{key}: {line}"), ok);
                    }
                    Err(f) => report(format!("{key}: failed: {f}"), false),
                }
            }
        }
        Hook::Watch => {
            let events = puts
                .iter()
                .map(|(k, v)| WatchEvent {
                    kind: EventKind::Put,
                    kv: sample_kv(k, v),
                    prev_kv: None,
                })
                .chain(a.deletes.iter().map(|k| WatchEvent {
                    kind: EventKind::Delete,
                    kv: WitKv {
                        value: Vec::new(),
                        ..sample_kv(k.as_bytes(), b"")
                    },
                    prev_kv: None,
                }));
            for event in events {
                let key = String::from_utf8_lossy(&event.kv.key).into_owned();
                match runtime.transform(&compiled, "test", limits, &config, &event) {
                    Ok(WatchAction::Pass) => report(format!("{key}: pass"), true),
                    Ok(WatchAction::Drop) => report(format!("{key}: drop"), true),
                    Ok(WatchAction::Replace(e)) => report(
                        format!(
                            "{key}: replace: {}",
                            serde_json::json!({
                                "type": if matches!(e.kind, EventKind::Delete) { "DELETE" } else { "PUT" },
                                "key": String::from_utf8_lossy(&e.kv.key),
                                "value": String::from_utf8_lossy(&e.kv.value),
                            })
                        ),
                        true,
                    ),
                    Err(f) => report(format!("{key}: failed: {f}"), false),
                }
            }
        }
    }
    Ok(all_allowed)
}

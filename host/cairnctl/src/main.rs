//! `cairnctl`: Cairn's own operator tool, for what `etcdctl` has no command
//! for. Today: a per-member status overview, a replica consistency check
//! and restoring a member from a backup (`etcdctl snapshot save` output).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod plugin;
use tonic::transport::{Channel, Endpoint};

use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{HashKvRequest, StatusRequest};

#[derive(Parser)]
#[command(name = "cairnctl", version, about = "Operate a Cairn cluster")]
struct Cli {
    /// Client URLs of the members, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379", global = true)]
    endpoints: Vec<String>,

    /// Time limit for each request, in seconds.
    #[arg(long, default_value_t = 5, global = true)]
    timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One line per member: id, leader, revision, raft term, index and applied index.
    Status,
    /// Checks that every member holds the same history: compares HashKV at
    /// the lowest revision all members have reached. Exits 1 on a mismatch.
    Check,
    /// Wasm plugins: install, list, remove, and test locally.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Backups taken with `etcdctl snapshot save` from a Cairn member.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotCommand,
    },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Verifies a backup's checksum and writes its state into a new data
    /// directory. Start `cairn` on it with the new cluster's flags
    /// (`--initial-cluster-state new`): it becomes a member of a new cluster
    /// holding the backup's keys, revisions and leases.
    Restore {
        /// The file `etcdctl snapshot save` wrote.
        file: std::path::PathBuf,
        /// The data directory to create; it must not exist or be empty.
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
    /// Verifies a backup's checksum and shows its revision, record count
    /// and size (`etcdctl snapshot status` reads only etcd's bbolt files).
    Status {
        /// The file `etcdctl snapshot save` wrote.
        file: std::path::PathBuf,
    },
}

fn snapshot_status(file: &std::path::Path) -> anyhow::Result<bool> {
    let s = cairn::backup::summarize(file).with_context(|| format!("reading {}", file.display()))?;
    println!("revision {}, {} records, {} bytes, checksum ok", s.revision, s.records, s.bytes);
    Ok(true)
}

fn restore(file: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<bool> {
    let restored = cairn::backup::restore(file, data_dir).with_context(|| format!("restoring {}", file.display()))?;
    println!(
        "restored {} records at revision {} into {}",
        restored.records,
        restored.revision,
        data_dir.display()
    );
    Ok(true)
}

async fn connect(url: &str, timeout: Duration) -> anyhow::Result<MaintenanceClient<Channel>> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let channel = Endpoint::from_shared(url.clone())
        .with_context(|| format!("invalid endpoint {url}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    Ok(MaintenanceClient::new(channel))
}

async fn status(cli: &Cli, timeout: Duration) -> anyhow::Result<bool> {
    let mut healthy = true;
    for ep in &cli.endpoints {
        let result = async {
            let mut client = connect(ep, timeout).await?;
            Ok::<_, anyhow::Error>(client.status(StatusRequest {}).await?.into_inner())
        }
        .await;
        match result {
            Ok(s) => {
                let header = s.header.unwrap_or_default();
                println!(
                    "{ep}: member {:x}, leader {:x}, revision {}, raft term {}, index {}, applied {}, db {} bytes{}",
                    header.member_id,
                    s.leader,
                    header.revision,
                    s.raft_term,
                    s.raft_index,
                    s.raft_applied_index,
                    s.db_size,
                    if s.is_learner { ", learner" } else { "" }
                );
            }
            Err(e) => {
                healthy = false;
                println!("{ep}: unavailable: {e:#}");
            }
        }
    }
    Ok(healthy)
}

async fn check(cli: &Cli, timeout: Duration) -> anyhow::Result<bool> {
    let mut clients = Vec::new();
    let mut lowest = i64::MAX;
    for ep in &cli.endpoints {
        let mut client = connect(ep, timeout).await?;
        let s = client
            .status(StatusRequest {})
            .await
            .with_context(|| format!("status of {ep}"))?
            .into_inner();
        lowest = lowest.min(s.header.map_or(0, |h| h.revision));
        clients.push((ep, client));
    }
    let mut hashes = Vec::new();
    for (ep, client) in &mut clients {
        let r = client
            .hash_kv(HashKvRequest { revision: lowest })
            .await
            .with_context(|| format!("hashkv of {ep}"))?
            .into_inner();
        println!("{ep}: revision {lowest}, hash {}, compact revision {}", r.hash, r.compact_revision);
        hashes.push(r.hash);
    }
    let agree = hashes.windows(2).all(|w| w[0] == w[1]);
    println!("{}", if agree { "members agree" } else { "MEMBERS DISAGREE" });
    Ok(agree)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let timeout = Duration::from_secs(cli.timeout);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairnctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Status => status(&cli, timeout).await,
            Command::Check => check(&cli, timeout).await,
            Command::Plugin(command) => plugin::run(command.clone(), &cli.endpoints, timeout).await,
            Command::Snapshot {
                action: SnapshotCommand::Restore { file, data_dir },
            } => restore(file, data_dir),
            Command::Snapshot {
                action: SnapshotCommand::Status { file },
            } => snapshot_status(file),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cairnctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

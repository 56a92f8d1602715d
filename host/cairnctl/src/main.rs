//! `cairnctl`: Cairn's own operator tool, for what `etcdctl` has no command
//! for. Today: a per-member status overview, a replica consistency check
//! and restoring a member from a backup (`etcdctl snapshot save` output,
//! from Cairn or from etcd).

use std::collections::BTreeSet;
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
    /// Checks a backup and writes its state into a new data directory. The
    /// file is what `etcdctl snapshot save` wrote, from Cairn or from etcd
    /// 3.4 to 3.6 (a bbolt database, with or without its sha256 trailer),
    /// or a Cairn dump. Start `cairn` on the directory with the same
    /// `--name` and `--initial-cluster` flags and `--initial-cluster-state
    /// new`: it becomes a member of a new cluster holding the backup's keys
    /// with their whole history, revisions, leases, users and roles. For a
    /// cluster, restore the same file once per member, as with `etcdutl`.
    Restore {
        /// The backup file.
        file: std::path::PathBuf,
        /// The data directory to create; it must not exist or be empty
        /// (default: NAME.etcd, as etcdutl's).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// The member this data dir is for.
        #[arg(long, default_value = "default")]
        name: String,
        /// The new cluster's members, NAME=PEER-URLS,... (checked against
        /// `--name` and `--initial-advertise-peer-urls`).
        #[arg(long, default_value = "default=http://localhost:2380")]
        initial_cluster: String,
        /// The new cluster's token (Cairn takes it from `cairn`'s own flag).
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs, comma-separated.
        #[arg(long, default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: String,
        /// Do not check an etcd snapshot's sha256 trailer.
        #[arg(long)]
        skip_hash_check: bool,
    },
    /// Verifies a backup's checksum and shows its format, revision, record
    /// (or, for an etcd snapshot, key) count and size.
    Status {
        /// The file `etcdctl snapshot save` wrote.
        file: std::path::PathBuf,
    },
}

fn snapshot_status(file: &std::path::Path) -> anyhow::Result<bool> {
    let s = cairn::backup::summarize(file).with_context(|| format!("reading {}", file.display()))?;
    let (format, what) = match s.format {
        cairn::backup::Format::Etcd => ("etcd snapshot", "keys"),
        cairn::backup::Format::Cairn => ("Cairn dump", "records"),
    };
    println!(
        "{format}: revision {}, {} {what}, {} bytes, checksum ok",
        s.revision, s.records, s.bytes
    );
    Ok(true)
}

/// The peer URLs `name` has in an `--initial-cluster` list.
fn peer_urls_of(initial_cluster: &str, name: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut urls = BTreeSet::new();
    for member in initial_cluster.split(',').filter(|m| !m.is_empty()) {
        let (n, url) = member
            .split_once('=')
            .with_context(|| format!("--initial-cluster: {member:?} is not NAME=URL"))?;
        if n == name {
            urls.insert(url.to_string());
        }
    }
    anyhow::ensure!(
        !urls.is_empty(),
        "--initial-cluster does not name this member ({name:?}): {initial_cluster}"
    );
    Ok(urls)
}

struct RestoreArgs<'a> {
    file: &'a std::path::Path,
    data_dir: Option<&'a std::path::Path>,
    name: &'a str,
    initial_cluster: &'a str,
    initial_cluster_token: &'a str,
    initial_advertise_peer_urls: &'a str,
    skip_hash_check: bool,
}

fn restore(args: RestoreArgs<'_>) -> anyhow::Result<bool> {
    // etcdutl's checks: the member is in the cluster it is restored for,
    // with the peer URLs it will advertise.
    let listed = peer_urls_of(args.initial_cluster, args.name)?;
    let advertised: BTreeSet<String> = args
        .initial_advertise_peer_urls
        .split(',')
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        listed == advertised,
        "--initial-cluster gives {} the peer URLs {listed:?}, --initial-advertise-peer-urls {advertised:?}",
        args.name
    );
    anyhow::ensure!(!args.initial_cluster_token.is_empty(), "--initial-cluster-token is empty");
    let default_dir = std::path::PathBuf::from(format!("{}.etcd", args.name));
    let data_dir = args.data_dir.unwrap_or(&default_dir);
    let restored =
        cairn::backup::restore(args.file, data_dir, !args.skip_hash_check).with_context(|| format!("restoring {}", args.file.display()))?;
    match &restored.etcd {
        Some(etcd) => println!(
            "restored etcd snapshot: {} revisions (compacted at {}), {} leases, {} users, {} roles, at revision {} into {}",
            etcd.revisions,
            etcd.compacted,
            etcd.leases,
            etcd.users,
            etcd.roles,
            restored.revision,
            data_dir.display()
        ),
        None => println!(
            "restored {} records at revision {} into {}",
            restored.records,
            restored.revision,
            data_dir.display()
        ),
    }
    println!(
        "start it with: cairn --name {} --data-dir {} --initial-cluster {} --initial-cluster-token {} --initial-advertise-peer-urls {} --initial-cluster-state new",
        args.name,
        data_dir.display(),
        args.initial_cluster,
        args.initial_cluster_token,
        args.initial_advertise_peer_urls
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
                action:
                    SnapshotCommand::Restore {
                        file,
                        data_dir,
                        name,
                        initial_cluster,
                        initial_cluster_token,
                        initial_advertise_peer_urls,
                        skip_hash_check,
                    },
            } => restore(RestoreArgs {
                file,
                data_dir: data_dir.as_deref(),
                name,
                initial_cluster,
                initial_cluster_token,
                initial_advertise_peer_urls,
                skip_hash_check: *skip_hash_check,
            }),
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

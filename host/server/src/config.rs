//! Server flags. Names, defaults and `ETCD_*` environment variables follow
//! etcd's, so an existing deployment can swap the binary.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Parser, Clone, Debug)]
#[command(
    name = "cairn",
    disable_version_flag = true,
    about = "Cairn: an etcd v3 compatible, Raft-replicated key-value store"
)]
pub struct ServerConfig {
    /// Print Cairn's version and the etcd version and API it serves, then exit.
    #[arg(short = 'V', long)]
    pub version: bool,

    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory (default: "<name>.etcd").
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: Vec<String>,

    /// This member's client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: Vec<String>,

    /// URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: Vec<String>,

    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: Vec<String>,

    /// Initial cluster configuration for bootstrapping: name=peer-url,...
    /// (default: "<name>=<initial-advertise-peer-urls>").
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Initial cluster state: new or existing.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", value_enum, default_value = "new")]
    pub initial_cluster_state: ClusterState,

    /// Initial cluster token, which makes member and cluster ids unique.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,

    /// Log level: debug, info, warn, error.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,

    /// Number of applied Raft entries after which the log is compacted
    /// (members further behind then catch up from a snapshot).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// Refuse membership changes the cluster could not carry (etcd's
    /// --strict-reconfig-check).
    #[arg(
        long,
        env = "ETCD_STRICT_RECONFIG_CHECK",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub strict_reconfig_check: bool,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,

    /// Auth tokens: "simple", or
    /// "jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m".
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple", value_parser = crate::auth::TokenKind::parse)]
    pub auth_token: crate::auth::TokenKind,

    /// Seconds a simple token lives after its last use.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,

    /// Cost of the bcrypt hashes of new passwords (4 to 31).
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = crate::auth::DEFAULT_BCRYPT_COST,
          value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,

    /// Largest plugin component (bytes) this member accepts for install.
    #[arg(long, env = "CAIRN_MAX_PLUGIN_BYTES", default_value_t = crate::plugin::registry::DEFAULT_MAX_PLUGIN_BYTES)]
    pub max_plugin_bytes: usize,

    /// How often a watch that asked for progress notifications and saw no
    /// events gets one (a Go duration; at least 100ms).
    /// (`--watch-progress-notify-interval` is etcd 3.6's spelling.)
    #[arg(
        long = "experimental-watch-progress-notify-interval",
        visible_alias = "watch-progress-notify-interval",
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = parse_go_duration
    )]
    pub watch_progress_notify_interval: Duration,

    /// Check this member's data against the other members' before serving
    /// (etcd 3.6: `--feature-gates=InitialCorruptCheck=true`).
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub experimental_initial_corrupt_check: bool,

    /// etcd 3.6's feature gates, `Name=bool,...` (see docs/compatibility.md
    /// for what each does in Cairn).
    #[arg(long, env = "ETCD_FEATURE_GATES", default_value = "", value_parser = crate::feature_gates::FeatureGates::parse)]
    pub feature_gates: crate::feature_gates::FeatureGates,

    /// The etcd version this server reports (`/version`,
    /// `Maintenance.Status`), which clients such as Kubernetes use to decide
    /// what they may rely on.
    #[arg(long, env = "CAIRN_EMULATED_ETCD_VERSION", default_value = DEFAULT_EMULATED_ETCD_VERSION)]
    pub emulated_etcd_version: String,

    /// URLs of extra plain-HTTP listeners serving only /metrics, /health,
    /// /livez and /readyz.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", value_delimiter = ',')]
    pub listen_metrics_urls: Vec<String>,

    /// How much the metrics tell: basic, or extensive (adds gRPC latency
    /// histograms).
    #[arg(long, env = "ETCD_METRICS", value_enum, default_value = "basic")]
    pub metrics: MetricsLevel,

    /// Origins allowed for CORS on the HTTP endpoints (comma-separated; `*`
    /// allows all).
    #[arg(long, env = "ETCD_CORS", value_delimiter = ',', default_value = "*")]
    pub cors: Vec<String>,

    /// Hosts HTTP requests may be addressed to (comma-separated; `*` allows
    /// all).
    #[arg(long, env = "ETCD_HOST_WHITELIST", value_delimiter = ',', default_value = "*")]
    pub host_whitelist: Vec<String>,

    /// Bytes the backend may hold before the NOSPACE alarm stops writes
    /// (0: etcd's default of 2 GiB; negative: no quota).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0, allow_negative_numbers = true)]
    pub quota_backend_bytes: i64,

    /// How often the leader compares the members' state hashes (a Go
    /// duration; 0 turns the check off).
    #[arg(
        long = "experimental-corrupt-check-time",
        env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0s",
        value_parser = parse_go_duration
    )]
    pub corrupt_check_time: Duration,

    /// TLS for clients and peers (etcd's security flags).
    #[command(flatten)]
    pub tls: crate::tls::TlsFlags,
}

/// Kubernetes serves consistent lists from its watch cache only from etcd
/// versions with working progress requests (3.4.31+ on the 3.4 line, see
/// docs/compatibility.md); Cairn serves the 3.4 API, so it reports the last
/// 3.4 release.
pub const DEFAULT_EMULATED_ETCD_VERSION: &str = "3.4.34";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MetricsLevel {
    Basic,
    Extensive,
}

impl ServerConfig {
    /// What `--version` prints. The `etcd Version:` and `API version:` lines
    /// have the form `etcd --version` and `etcdctl version` print, because
    /// deployment scripts grep them to decide which flags and upgrade steps
    /// apply; they give the version this member reports to clients
    /// (`--emulated-etcd-version`), so the two answers always agree.
    pub fn version_text(&self) -> String {
        format!(
            "cairn Version: {}\netcd Version: {}\nAPI version: {}\nOS/Arch: {}/{}\n",
            env!("CARGO_PKG_VERSION"),
            self.emulated_etcd_version,
            api_version(&self.emulated_etcd_version),
            std::env::consts::OS,
            std::env::consts::ARCH,
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)))
    }

    /// Folds the feature gates into the settings they stand for; returns
    /// the gates that are accepted but have no effect, to be warned about.
    pub fn resolve_feature_gates(&mut self) -> Result<Vec<String>, String> {
        use crate::feature_gates::INITIAL_CORRUPT_CHECK;
        if let Some(on) = self.feature_gates.get(INITIAL_CORRUPT_CHECK) {
            if self.experimental_initial_corrupt_check && !on {
                return Err(format!(
                    "--experimental-initial-corrupt-check=true conflicts with --feature-gates={INITIAL_CORRUPT_CHECK}=false"
                ));
            }
            self.experimental_initial_corrupt_check = on;
        }
        Ok(self.feature_gates.ignored())
    }

    /// Whether to check the state against the peers' before serving; the
    /// feature gate is folded in by `resolve_feature_gates`.
    pub fn initial_corrupt_check(&self) -> bool {
        self.experimental_initial_corrupt_check
    }

    pub fn initial_cluster(&self) -> String {
        self.initial_cluster.clone().unwrap_or_else(|| {
            self.initial_advertise_peer_urls
                .iter()
                .map(|u| format!("{}={}", self.name, u))
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

/// The API version of an etcd release, "major.minor", as `etcdctl version`
/// prints it.
pub fn api_version(release: &str) -> String {
    release.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
}

/// Parses a duration as Go's `time.ParseDuration` writes them ("10m",
/// "1h30m", "1.5s", "100ms", "0"), since etcd's duration flags take that
/// form. A negative duration reads as zero: every such flag treats zero and
/// below alike.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let number: f64 = match &rest[..number_len] {
            "" | "." => return Err(invalid()),
            n => n.parse().map_err(|_| invalid())?,
        };
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("{}: unknown unit", invalid())),
        };
        rest = &rest[unit_len..];
        nanos += number * scale;
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(format!("{}: out of range", invalid()));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_cairn_and_the_etcd_release_and_api_it_serves() {
        let cfg = ServerConfig::parse_from(["cairn", "--version"]);
        assert!(cfg.version);
        let text = cfg.version_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("cairn Version: {}", env!("CARGO_PKG_VERSION")));
        assert_eq!(lines[1], format!("etcd Version: {DEFAULT_EMULATED_ETCD_VERSION}"));
        assert_eq!(lines[2], "API version: 3.4");
        let cfg = ServerConfig::parse_from(["cairn", "--emulated-etcd-version", "3.5.17", "-V"]);
        assert!(cfg.version_text().contains("etcd Version: 3.5.17\nAPI version: 3.5\n"));
        assert_eq!(api_version("3"), "3");
    }

    #[test]
    fn etcd_36_spellings() {
        let parse = |args: &[&str]| ServerConfig::try_parse_from(std::iter::once("cairn").chain(args.iter().copied()));
        let mut cfg = parse(&["--watch-progress-notify-interval=5s", "--feature-gates=InitialCorruptCheck=true"]).unwrap();
        assert_eq!(cfg.watch_progress_notify_interval, Duration::from_secs(5));
        assert_eq!(cfg.resolve_feature_gates(), Ok(vec![]));
        assert!(cfg.experimental_initial_corrupt_check);
        let mut cfg = parse(&[
            "--experimental-initial-corrupt-check=true",
            "--feature-gates=InitialCorruptCheck=false",
        ])
        .unwrap();
        assert!(cfg.resolve_feature_gates().is_err());
        assert!(parse(&["--feature-gates=InitialCorruptCheck"]).is_err());
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("10m", ms(600_000)),
            ("1h30m", ms(5_400_000)),
            ("1.5s", ms(1_500)),
            ("100ms", ms(100)),
            ("250us", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("+2s", ms(2_000)),
            ("-1s", Duration::ZERO),
        ] {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "10", "1x", "s", ".s", "1..2s", "-", "ms10"] {
            assert!(parse_go_duration(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn feature_gates_and_the_initial_corrupt_check() {
        let parse = |args: &[&str]| {
            let mut cfg = ServerConfig::try_parse_from([&["cairn"], args].concat()).unwrap();
            cfg.resolve_feature_gates().map(|_| cfg)
        };
        let on = |args: &[&str]| parse(args).unwrap().initial_corrupt_check();
        assert!(!on(&[]));
        assert!(on(&["--experimental-initial-corrupt-check"]));
        assert!(on(&["--experimental-initial-corrupt-check=true"]));
        assert!(on(&["--feature-gates=InitialCorruptCheck=true,StopGRPCServiceOnDefrag=false"]));
        assert!(parse(&["--experimental-initial-corrupt-check", "--feature-gates=InitialCorruptCheck=false"]).is_err());
        for bad in ["InitialCorruptCheck", "InitialCorruptCheck=yes"] {
            assert!(crate::feature_gates::FeatureGates::parse(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(parse(&["--quota-backend-bytes=-1"]).unwrap().quota_backend_bytes, -1);
        assert_eq!(parse(&[]).unwrap().quota_backend_bytes, 0);
        assert_eq!(
            parse(&["--experimental-corrupt-check-time=2s"]).unwrap().corrupt_check_time,
            Duration::from_secs(2)
        );
    }
}

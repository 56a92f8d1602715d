//! Command-line flags, named after etcd's `benchmark` tool where it has one.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "cairn-bench", version, about = "Benchmark an etcd v3 endpoint (etcd or Cairn)")]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(ClapArgs, Debug, Clone)]
pub struct Common {
    /// Client URLs of the cluster, comma separated (http://host:port or host:port).
    #[arg(long, global = true, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Number of gRPC connections (HTTP/2 channels), spread over the endpoints.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Number of concurrent clients, each with one request in flight.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Stop after this many requests (the default when neither is given: 10000).
    #[arg(long, global = true, conflicts_with = "duration")]
    pub total: Option<u64>,
    /// Stop after this long instead, e.g. 10s, 500ms, 2m.
    #[arg(long, global = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Key size in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys the workload touches.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub key_space: u64,
    /// Visit keys in order rather than at random.
    #[arg(long, global = true)]
    pub sequential_keys: bool,
    /// Print the report as one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Per-request deadline; a request that misses it counts as an error.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// CA bundle that verifies the server's certificate (https endpoints), as etcdctl's --cacert.
    #[arg(long, global = true)]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate to present, as etcdctl's --cert (with --key).
    #[arg(long, global = true, requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Private key of --cert.
    #[arg(long, global = true, requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Send puts and ranges as JSON over HTTP/1.1 to etcd's gateway
    /// (`/v3/kv/put`, `/v3/kv/range`) instead of gRPC; --conns keep-alive
    /// connections, one request in flight on each.
    #[arg(long, global = true)]
    pub gateway: bool,
    /// `name:password` to authenticate with once; every request then carries the token, as etcdctl's --user.
    #[arg(long, global = true)]
    pub user: Option<String>,
}

pub const DEFAULT_TOTAL: u64 = 10_000;

impl Common {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.conns == 0 || self.clients == 0 {
            bail!("--conns and --clients must be at least 1");
        }
        if self.endpoints.is_empty() {
            bail!("--endpoints is empty");
        }
        if self.key_space == 0 {
            bail!("--key-space must be at least 1");
        }
        if self.key_size == 0 {
            bail!("--key-size must be at least 1");
        }
        Ok(())
    }

    /// The request budget when neither `--total` nor `--duration` was given.
    pub fn total_or_default(&self) -> Option<u64> {
        match (self.total, self.duration) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TOTAL),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Workload {
    /// Puts of --val-size values to keys from the key space.
    Put,
    /// Single-key gets from the (prefilled) key space.
    Range(RangeArgs),
    /// Compare-and-swap: a txn comparing the key's mod_revision with the one
    /// the client last saw, then a put (keys start absent: revision 0).
    Txn,
    /// Gets and puts mixed at --read-ratio.
    Mixed(MixedArgs),
    /// Writes every key of the key space once, batched into txns; for
    /// loading data before measuring memory or restart time.
    Load(LoadArgs),
    /// Watchers on a prefix and writers putting under it; measures the
    /// delay from a put being sent to each watcher receiving its event.
    Watch(WatchArgs),
    /// Leases kept alive over keep-alive streams, one request in flight per client.
    LeaseKeepalive(LeaseArgs),
    /// Waits until every endpoint answers a linearizable read, and reports
    /// how long that took; for timing server start-up.
    Wait(WaitArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

#[derive(ClapArgs, Debug, Clone, Copy)]
pub struct Prefill {
    /// Skip writing the key space before measuring.
    #[arg(long)]
    no_prefill: bool,
}

impl Prefill {
    pub fn enabled(self) -> bool {
        !self.no_prefill
    }
}

#[derive(ClapArgs, Debug)]
pub struct RangeArgs {
    /// Read consistency: l (linearizable) or s (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    #[command(flatten)]
    pub prefill: Prefill,
}

#[derive(ClapArgs, Debug)]
pub struct MixedArgs {
    /// Fraction of requests that are reads, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Read consistency: l (linearizable) or s (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    #[command(flatten)]
    pub prefill: Prefill,
}

#[derive(ClapArgs, Debug)]
pub struct LoadArgs {
    /// Puts per txn (etcd allows 128 by default).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
}

#[derive(ClapArgs, Debug)]
pub struct WatchArgs {
    /// Number of watchers, all on the benchmark prefix.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Number of watch streams the watchers share (at most one per watcher).
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
}

#[derive(ClapArgs, Debug)]
pub struct WaitArgs {
    /// Give up after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(ClapArgs, Debug)]
pub struct LeaseArgs {
    /// TTL of the granted leases, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
}

/// Parses `10s`, `250ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().with_context(|| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid duration unit in {s:?} (use ms, s, m or h)"),
    };
    Duration::try_from_secs_f64(secs).with_context(|| format!("invalid duration {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999999h").is_err());
    }
}

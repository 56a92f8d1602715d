//! `cairn-bench`: a load generator for any etcd v3 endpoint, in the manner of
//! etcd's own `benchmark` tool. It speaks the etcd wire protocol through the
//! same generated clients the server is built from, so the same run can be
//! pointed at etcd or at Cairn and the numbers compared.
//!
//! Every workload is closed-loop: `--clients` tasks each keep one request in
//! flight, multiplexed over `--conns` HTTP/2 connections, until `--total`
//! requests were issued or `--duration` elapsed. With `--gateway`, puts and
//! ranges go through etcd's JSON gateway over HTTP/1.1 instead.

mod args;
mod conn;
mod driver;
mod gateway;
mod keys;
mod kv;
mod lease;
mod report;
mod wait;
mod watch;

use clap::Parser;
// The wire types, under the name every module of this crate uses.
use cairn_proto as proto;

use args::{Args, Workload};
use report::Report;

/// Runs the workload the arguments name and returns its measurements.
async fn run(args: Args) -> anyhow::Result<Report> {
    let common = args.common;
    common.validate()?;
    let connect = || conn::connect_all(&common);
    if common.gateway {
        let gateway = gateway::Gateway::connect(&common).await?;
        return match args.workload {
            Workload::Put => kv::gateway_put(&common, gateway).await,
            Workload::Range(r) => {
                let prefill = if r.prefill.enabled() { Some(connect().await?) } else { None };
                kv::gateway_range(&common, prefill.as_deref(), gateway, r.consistency).await
            }
            _ => anyhow::bail!("--gateway measures put and range only"),
        };
    }
    match args.workload {
        Workload::Put => kv::put(&common, &connect().await?).await,
        Workload::Range(r) => kv::range(&common, &connect().await?, r.consistency, r.prefill.enabled()).await,
        Workload::Txn => kv::txn(&common, &connect().await?).await,
        Workload::Mixed(m) => kv::mixed(&common, &connect().await?, m.read_ratio, m.consistency, m.prefill.enabled()).await,
        Workload::Load(l) => kv::load(&common, &connect().await?, l.batch).await,
        Workload::Watch(w) => watch::run(&common, &connect().await?, &w).await,
        Workload::LeaseKeepalive(l) => lease::keepalive(&common, &connect().await?, l.ttl).await,
        // Connects itself: the endpoint may not be up yet.
        Workload::Wait(w) => wait::until_ready(&common, w.timeout).await,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let json = args.common.json;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run(args))?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

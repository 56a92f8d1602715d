//! `cairn-bench`: load generator for etcd v3 endpoints (see `cairn::bench`).

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cairn::bench::Args::parse();
    let json = args.common.json;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(cairn::bench::run(args))?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

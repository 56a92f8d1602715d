//! Generates the gRPC stubs from the `.proto` files beside this crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in: one target dir may serve several
    // checkouts of the repository (CI keeps it outside the clone).
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let files = [
        "mvccpb/kv.proto",
        "authpb/auth.proto",
        "etcdserverpb/rpc.proto",
        "v3lockpb/v3lock.proto",
        "v3electionpb/v3election.proto",
        "cairnpb/raft_request.proto",
        "cairnpb/peer.proto",
        "cairnpb/plugin.proto",
    ];
    let paths: Vec<_> = files.iter().map(|f| root.join(f)).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&paths, &[root])?;
    Ok(())
}

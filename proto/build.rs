//! Generates the gRPC stubs from the `.proto` files beside this crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in: one target dir may serve several
    // checkouts of the repository (CI keeps it outside the clone).
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let files = [
        "mvccpb/kv.proto",
        "authpb/auth.proto",
        "leasepb/lease.proto",
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
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("descriptors.bin");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(&descriptors)
        .compile_protos(&paths, &[root])?;
    // The JSON gateway speaks etcd's own mapping, which keeps the proto
    // field names (`mod_revision`, `TTL`) rather than lowerCamelCase.
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        // etcd's gateway skips fields it does not know; so must we.
        .ignore_unknown_fields()
        .build(&[".mvccpb", ".authpb", ".etcdserverpb", ".v3lockpb", ".v3electionpb"])?;
    Ok(())
}

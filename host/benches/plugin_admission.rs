//! One admission call, instantiation included, on the apply loop's engine
//! (pooling allocator, fuel, memory cap): the cost every plugin-bound write
//! pays on every member.
//!
//! Runs a minimal component written in component text, and, when `make
//! plugins` has built it, the Rust `allow-all` reference fixture (a real
//! wit-bindgen guest with its allocator and data segments).

use std::path::PathBuf;
use std::sync::Arc;

use cairn::plugin::bindings::{Identity, Mutation, PutOp, RequestKind, WriteRequest};
use cairn::plugin::{Allocation, CallLimits, EmptyState, Hook, Runtime};
use criterion::{criterion_group, criterion_main, Criterion};

const ALLOW_TEXT: &str = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $bump))
      (global.set $bump (i32.and (i32.add (i32.add (global.get $bump) (local.get 3)) (i32.const 7)) (i32.const -8)))
      (local.get $p))
    (func (export "admit") (param i32 i32 i32 i32 i32 i32 i32 i64) (result i32)
      (i32.store8 (i32.const 0) (i32.const 0)) (i32.const 0)))
  (core instance $i (instantiate $m))
  (type $rk' (enum "put" "delete-range" "txn"))
  (export $rk "request-kind" (type $rk'))
  (type $put' (record (field "key" (list u8)) (field "value" (list u8)) (field "lease" s64)))
  (export $put "put-op" (type $put'))
  (type $del' (record (field "key" (list u8)) (field "range-end" (list u8))))
  (export $del "delete-op" (type $del'))
  (type $mut' (variant (case "put" $put) (case "delete-range" $del)))
  (export $mut "mutation" (type $mut'))
  (type $id' (record (field "user" string)))
  (export $id "identity" (type $id'))
  (type $req' (record (field "kind" $rk) (field "mutations" (list $mut)) (field "identity" $id) (field "revision" s64)))
  (export $req "write-request" (type $req'))
  (type $verdict' (variant (case "allow") (case "deny" string) (case "warn" string)))
  (export $verdict "verdict" (type $verdict'))
  (type $admit-ty (func (param "config" (list u8)) (param "request" $req) (result $verdict)))
  (func $admit (type $admit-ty)
    (canon lift (core func $i "admit") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "admit" (func $admit))
)"#;

fn built_plugin(name: &str) -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("CAIRN_PLUGIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(d).join("plugins"));
    }
    dirs.into_iter().map(|d| d.join(format!("{name}.wasm"))).find(|p| p.is_file())
}

fn admission_call(c: &mut Criterion) {
    let runtime = Runtime::new(Allocation::Pooling).expect("engine");
    let request = WriteRequest {
        kind: RequestKind::Put,
        mutations: vec![Mutation::Put(PutOp {
            key: b"users/0001".to_vec(),
            value: br#"{"name":"ada","email":"ada@example.com"}"#.to_vec(),
            lease: 0,
        })],
        identity: Identity { user: String::new() },
        revision: 42,
    };
    let limits = CallLimits::resolve(0, 0);
    let mut components = vec![("component-text", wat::parse_str(ALLOW_TEXT).expect("component text"))];
    if let Some(path) = built_plugin("allow-all") {
        components.push(("rust-allow-all", std::fs::read(path).expect("read allow-all.wasm")));
    }
    for (name, wasm) in components {
        let compiled = runtime.compile(&wasm, Hook::Admission).expect("compiles");
        c.bench_function(&format!("admission call ({name}, instantiation included)"), |b| {
            b.iter(|| {
                runtime
                    .admit(&compiled, "bench", limits, b"", &request, Arc::new(EmptyState))
                    .expect("allowed")
            })
        });
    }
}

criterion_group!(benches, admission_call);
criterion_main!(benches);

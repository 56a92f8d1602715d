//! One admission call, instantiation included, on the apply loop's engine
//! (pooling allocator, fuel, memory cap): the cost every plugin-bound write
//! pays on every member.
//!
//! Runs a minimal component written in component text, and, when `make
//! plugins` has built it, the Rust `allow-all` reference fixture (a real
//! wit-bindgen guest with its allocator and data segments).

use std::sync::Arc;

use cairn::plugin::bindings::{Identity, Mutation, PutOp, RequestKind, WriteRequest};
use cairn::plugin::{Allocation, CallLimits, EmptyState, Hook, Runtime};
use criterion::{criterion_group, criterion_main, Criterion};
use harness::component_text;

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
    let mut components = vec![("component-text", component_text::admission("", component_text::ALLOW))];
    if let Some(path) = harness::plugins::find_plugin_wasm("allow-all") {
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

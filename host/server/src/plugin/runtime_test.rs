//! The runtime against hand-written hostile components (component text), so
//! that every failure kind is exercised without the guest toolchain.

use std::sync::Arc;

use super::bindings::{EventKind, Identity, KeyValue, RequestKind, Verdict, WatchAction, WatchEvent, WriteRequest};
use super::runtime::{Allocation, CallLimits, CompileError, EmptyState, Failure, Runtime};
use super::Hook;
use harness::component_text::{self, deny, deny_at, ALLOW};

/// An admission component whose `admit` runs `body`, with the reason text
/// "nope" at offset 64.
fn admission_component(body: &str) -> Vec<u8> {
    component_text::admission("nope", body)
}

const SPIN: &str = "(loop $l (br $l)) (unreachable)";
const TRAP: &str = "(unreachable)";
const MEMORY_BOMB: &str = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (unreachable)";
const RECURSE: &str = "(drop (call $recurse)) (i32.const 0)";

fn request() -> WriteRequest {
    WriteRequest {
        kind: RequestKind::Put,
        mutations: Vec::new(),
        identity: Identity { user: String::new() },
        revision: 1,
    }
}

fn limits() -> CallLimits {
    CallLimits::resolve(1_000_000, 4 << 20)
}

fn admit(runtime: &Runtime, body: &str) -> Result<Verdict, Failure> {
    let compiled = runtime.compile(&admission_component(body), Hook::Admission).expect("compiles");
    runtime.admit(&compiled, "t", limits(), b"cfg", &request(), Arc::new(EmptyState))
}

fn runtimes() -> [Runtime; 2] {
    [
        Runtime::new(Allocation::Pooling).expect("pooling runtime"),
        Runtime::new(Allocation::OnDemand).expect("on-demand runtime"),
    ]
}

#[test]
fn verdicts_come_back_as_the_component_returns_them() {
    for rt in runtimes() {
        assert_eq!(admit(&rt, ALLOW), Ok(Verdict::Allow));
        assert_eq!(admit(&rt, &deny(4)), Ok(Verdict::Deny("nope".into())));
    }
}

#[test]
fn hostile_components_fail_with_deterministic_kinds() {
    for rt in runtimes() {
        assert_eq!(admit(&rt, SPIN), Err(Failure::OutOfFuel));
        assert_eq!(
            admit(&rt, TRAP),
            Err(Failure::Trap("wasm `unreachable` instruction executed".into()))
        );
        assert_eq!(admit(&rt, MEMORY_BOMB), Err(Failure::MemoryLimitExceeded));
        assert_eq!(admit(&rt, RECURSE), Err(Failure::StackOverflow));
        // Twice: a failed call leaves nothing behind for the next one.
        assert_eq!(admit(&rt, SPIN), Err(Failure::OutOfFuel));
        assert_eq!(admit(&rt, ALLOW), Ok(Verdict::Allow));
    }
}

#[test]
fn an_oversized_reason_is_a_failure_not_an_allocation() {
    // 1 MiB of reason text (zeroed pages, so valid UTF-8): grow the memory
    // to hold it, then point at it.
    let body = format!("(drop (memory.grow (i32.const 17))) {}", deny_at(2 << 16, 1 << 20));
    for rt in runtimes() {
        assert_eq!(admit(&rt, &body), Err(Failure::OutputTooLarge));
    }
    // Pointing outside memory is a failure too, not a host crash.
    let rt = Runtime::new(Allocation::Pooling).expect("runtime");
    assert!(matches!(admit(&rt, &deny(1 << 30)), Err(Failure::Trap(_))));
}

#[test]
fn invalid_bytes_and_wrong_worlds_are_refused_at_compile() {
    let rt = Runtime::new(Allocation::OnDemand).expect("runtime");
    assert!(matches!(
        rt.compile(b"not wasm at all", Hook::Admission),
        Err(CompileError::Invalid(_))
    ));
    // A core module is not a component.
    let core = wat::parse_str("(module (func (export \"admit\")))").expect("parses");
    assert!(matches!(rt.compile(&core, Hook::Admission), Err(CompileError::Invalid(_))));
    // A good admission component is not a validate or watch plugin.
    let admission = admission_component(ALLOW);
    assert!(rt.compile(&admission, Hook::Admission).is_ok());
    assert!(matches!(
        rt.compile(&admission, Hook::Validate),
        Err(CompileError::WrongWorld { .. })
    ));
    assert!(matches!(rt.compile(&admission, Hook::Watch), Err(CompileError::WrongWorld { .. })));
    // An import the host does not provide (no WASI, nothing else).
    let wasi = wat::parse_str(
        r#"(component
  (import "wasi:random/random@0.2.0" (instance (export "get-random-u64" (func (result u64)))))
)"#,
    )
    .expect("parses");
    assert!(matches!(rt.compile(&wasi, Hook::Admission), Err(CompileError::WrongWorld { .. })));
}

/// A watch component whose `transform` drops every event.
fn drop_all_watch() -> Vec<u8> {
    component_text::watch_component("(i32.store8 (i32.const 0) (i32.const 1)) (i32.const 0)")
}

#[test]
fn a_watch_component_transforms_events() {
    let rt = Runtime::new(Allocation::OnDemand).expect("runtime");
    let compiled = rt.compile(&drop_all_watch(), Hook::Watch).expect("compiles");
    let event = WatchEvent {
        kind: EventKind::Put,
        kv: KeyValue {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            lease: 0,
        },
        prev_kv: None,
    };
    assert!(matches!(rt.transform(&compiled, "t", limits(), b"", &event), Ok(WatchAction::Drop)));
}

//! The runtime against hand-written hostile components (component text), so
//! that every failure kind is exercised without the guest toolchain.

use std::sync::Arc;

use super::bindings::{EventKind, Identity, KeyValue, RequestKind, Verdict, WatchAction, WatchEvent, WriteRequest};
use super::runtime::{Allocation, CallLimits, CompileError, EmptyState, Failure, Runtime};
use super::Hook;

/// The admission world's types and an `admit` whose core body is `body`
/// (params: config ptr/len, kind, mutations ptr/len, user ptr/len,
/// revision; result: pointer to the verdict). Memory offset 0 holds the
/// verdict, the reason text lives at 64.
pub(super) fn admission_component(body: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  (core module $m
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 4096))
    (data (i32.const 64) "nope")
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $bump))
      (global.set $bump (i32.and (i32.add (i32.add (global.get $bump) (local.get 3)) (i32.const 7)) (i32.const -8)))
      (local.get $p))
    (func $recurse (result i32) (i32.add (call $recurse) (i32.const 1)))
    (func (export "admit") (param i32 i32 i32 i32 i32 i32 i32 i64) (result i32)
      {body})
  )
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
)"#
    );
    wat::parse_str(text).expect("test component text parses")
}

/// Verdict "deny" with reason bytes [64, 64 + len).
pub(super) fn deny_with_len(len: u32) -> String {
    deny_at(64, len)
}

fn deny_at(ptr: u32, len: u32) -> String {
    format!(
        "(i32.store8 (i32.const 0) (i32.const 1)) (i32.store (i32.const 4) (i32.const {ptr})) \
         (i32.store (i32.const 8) (i32.const {len})) (i32.const 0)"
    )
}

const ALLOW: &str = "(i32.store8 (i32.const 0) (i32.const 0)) (i32.const 0)";
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
        assert_eq!(admit(&rt, &deny_with_len(4)), Ok(Verdict::Deny("nope".into())));
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
    assert!(matches!(admit(&rt, &deny_with_len(1 << 30)), Err(Failure::Trap(_))));
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

/// A watch component whose `transform` drops every event. Its parameters
/// do not fit in registers, so they arrive as one pointer.
fn drop_all_watch() -> Vec<u8> {
    let text = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $bump))
      (global.set $bump (i32.and (i32.add (i32.add (global.get $bump) (local.get 3)) (i32.const 7)) (i32.const -8)))
      (local.get $p))
    (func (export "transform") (param i32) (result i32)
      (i32.store8 (i32.const 0) (i32.const 1))
      (i32.const 0))
  )
  (core instance $i (instantiate $m))
  (type $kv' (record (field "key" (list u8)) (field "value" (list u8)) (field "create-revision" s64)
    (field "mod-revision" s64) (field "version" s64) (field "lease" s64)))
  (export $kv "key-value" (type $kv'))
  (type $ek' (enum "put" "delete"))
  (export $ek "event-kind" (type $ek'))
  (type $ev' (record (field "kind" $ek) (field "kv" $kv) (field "prev-kv" (option $kv))))
  (export $ev "watch-event" (type $ev'))
  (type $action' (variant (case "pass") (case "drop") (case "replace" $ev)))
  (export $action "watch-action" (type $action'))
  (type $transform-ty (func (param "config" (list u8)) (param "event" $ev) (result $action)))
  (func $transform (type $transform-ty)
    (canon lift (core func $i "transform") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "transform" (func $transform))
)"#;
    wat::parse_str(text).expect("test component text parses")
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

//! Components written in component text, for tests and benchmarks that
//! need a plugin under their exact control (hostile ones above all) without
//! the guest toolchain: the WIT worlds' types spelled out once, and builders
//! that wrap a core function body in a whole component.
//!
//! Memory conventions every builder shares: offset 0 holds the result
//! (verdict or action), text the body refers to starts at 64, and `realloc`
//! bumps from 4096.

pub const REALLOC: &str = r#"
    (global $bump (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $bump))
      (global.set $bump (i32.and (i32.add (i32.add (global.get $bump) (local.get 3)) (i32.const 7)) (i32.const -8)))
      (local.get $p))"#;

pub const VERDICT_TYPES: &str = r#"
  (type $verdict' (variant (case "allow") (case "deny" string) (case "warn" string)))
  (export $verdict "verdict" (type $verdict'))"#;

pub const REQUEST_TYPES: &str = r#"
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
  (export $req "write-request" (type $req'))"#;

/// Core instructions that return the verdict "deny" with the `len` bytes of
/// text at memory offset 64.
pub fn deny(len: u32) -> String {
    deny_at(64, len)
}

pub fn deny_at(ptr: u32, len: u32) -> String {
    format!(
        "(i32.store8 (i32.const 0) (i32.const 1)) (i32.store (i32.const 4) (i32.const {ptr})) \
         (i32.store (i32.const 8) (i32.const {len})) (i32.const 0)"
    )
}

pub const ALLOW: &str = "(i32.store8 (i32.const 0) (i32.const 0)) (i32.const 0)";

/// An admission component importing nothing, whose `admit` runs `body`
/// (params: config ptr/len, kind, mutations ptr/len, user ptr/len,
/// revision; result: pointer to the verdict), with `data` at offset 64.
pub fn admission(data: &str, body: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  (core module $m
    (memory (export "memory") 1)
    {REALLOC}
    (data (i32.const 64) "{data}")
    (func $recurse (result i32) (i32.add (call $recurse) (i32.const 1)))
    (func (export "admit") (param i32 i32 i32 i32 i32 i32 i32 i64) (result i32)
      {body}))
  (core instance $i (instantiate $m))
  {REQUEST_TYPES}
  {VERDICT_TYPES}
  (type $admit-ty (func (param "config" (list u8)) (param "request" $req) (result $verdict)))
  (func $admit (type $admit-ty)
    (canon lift (core func $i "admit") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "admit" (func $admit))
)"#
    );
    wat::parse_str(text).expect("admission component text parses")
}

/// Like [`admission`], with the host's `state` interface imported: the body
/// may call `$range_count` (key ptr/len, range-end ptr/len) -> u64.
pub fn admission_with_state(data: &str, body: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  (import "cairn:plugin/state@0.1.0" (instance $state
    (export "range-count" (func (param "key" (list u8)) (param "range-end" (list u8)) (result u64)))))
  (core module $memory_module
    (memory (export "memory") 1)
    {REALLOC})
  (core instance $mem (instantiate $memory_module))
  (alias core export $mem "memory" (core memory $memory))
  (core func $range_count (canon lower (func $state "range-count") (memory $memory)))
  (core module $m
    (import "env" "memory" (memory 1))
    (import "env" "range-count" (func $range_count (param i32 i32 i32 i32) (result i64)))
    (data (i32.const 64) "{data}")
    (func $recurse (result i32) (i32.add (call $recurse) (i32.const 1)))
    (func (export "admit") (param i32 i32 i32 i32 i32 i32 i32 i64) (result i32)
      {body}))
  (core instance $env (export "memory" (memory $memory)) (export "range-count" (func $range_count)))
  (core instance $i (instantiate $m (with "env" (instance $env))))
  {REQUEST_TYPES}
  {VERDICT_TYPES}
  (type $admit-ty (func (param "config" (list u8)) (param "request" $req) (result $verdict)))
  (func $admit (type $admit-ty)
    (canon lift (core func $i "admit") (memory $memory) (realloc (core func $mem "realloc"))))
  (export "admit" (func $admit))
)"#
    );
    wat::parse_str(text).expect("admission component text parses")
}

/// A watch component whose `transform` runs `body` (the parameter is
/// `$args`, the result a pointer to the action).
pub fn watch_component(body: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  (core module $m
    (memory (export "memory") 1)
    {REALLOC}
    (func (export "transform") (param $args i32) (result i32)
      {body}))
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
)"#
    );
    wat::parse_str(text).expect("watch component text parses")
}

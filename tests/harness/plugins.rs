//! Plugin fixtures: the reference plugins that `make plugins` builds, small
//! components written here in component text (so that every hostile case is
//! under the test's control), and `cairnctl` to drive the management API.

use std::path::{Path, PathBuf};

use crate::component_text::{self, deny, deny_at, watch_component, ALLOW, REALLOC, VERDICT_TYPES};
use crate::etcdctl::Output;

/// The component `make plugins` built for `name`: `$CAIRN_PLUGIN_DIR`, then
/// `$CARGO_TARGET_DIR/plugins`, then `~/.cache/cairn-target/plugins`.
pub fn find_plugin_wasm(name: &str) -> Option<PathBuf> {
    plugin_dirs()
        .into_iter()
        .map(|d| d.join(format!("{name}.wasm")))
        .find(|p| p.is_file())
}

/// Like [`find_plugin_wasm`], for tests that cannot run without it.
pub fn plugin_wasm(name: &str) -> PathBuf {
    find_plugin_wasm(name).unwrap_or_else(|| panic!("plugin {name}.wasm not found in {:?}: run `make plugins`", plugin_dirs()))
}

fn plugin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("CAIRN_PLUGIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(d).join("plugins"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/cairn-target/plugins"));
    }
    dirs
}

/// Runs the `cairnctl` built next to the server binary.
pub fn cairnctl(args: &[&str]) -> Output {
    let bin = crate::cairn_bin().with_file_name("cairnctl");
    let out = std::process::Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    Output {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes a component to `dir/name.wasm` and returns its path.
pub fn write_component(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// What a hand-written admission component does when called.
#[derive(Clone, Copy, Debug)]
pub enum Admission {
    /// Denies with this reason.
    Deny(&'static str),
    /// Loops forever (fuel exhaustion).
    Spin,
    /// Grows memory without bound.
    MemoryBomb,
    /// Executes `unreachable`.
    Trap,
    /// Recurses without bound (stack overflow).
    Recursion,
    /// Returns a deny reason of 1 MiB.
    HugeOutput,
    /// Denies a put or txn once `[prefix, prefix_end)` already holds `max`
    /// keys, read through the `state` import at the revision being applied.
    Quota {
        prefix: &'static str,
        prefix_end: &'static str,
        max: u64,
    },
}

/// An admission component, as bytes.
pub fn admission_component(behaviour: Admission) -> Vec<u8> {
    let (data, body) = match behaviour {
        Admission::Deny(reason) => (reason.to_string(), deny(reason.len() as u32)),
        Admission::Spin => (String::new(), "(loop $l (br $l)) (unreachable)".into()),
        Admission::MemoryBomb => (
            String::new(),
            "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (unreachable)".into(),
        ),
        Admission::Trap => (String::new(), "(unreachable)".into()),
        Admission::Recursion => (String::new(), "(drop (call $recurse)) (i32.const 0)".into()),
        // 1 MiB of zeroed (so valid UTF-8) memory from page 2 on.
        Admission::HugeOutput => (
            String::new(),
            format!("(drop (memory.grow (i32.const 17))) {}", deny_at(2 << 16, 1 << 20)),
        ),
        Admission::Quota { prefix, prefix_end, max } => {
            let reason = "quota exceeded";
            // prefix at 1024, prefix_end at 2048.
            // Deletes (request kind 1) always pass: they only free quota.
            let body = format!(
                "(if (result i32) (i32.eq (local.get 2) (i32.const 1)) (then {ALLOW}) (else \
                 (if (result i32) (i64.ge_u (call $range_count (i32.const 1024) (i32.const {}) (i32.const 2048) (i32.const {})) (i64.const {max})) \
                 (then {}) (else {ALLOW}))))",
                prefix.len(),
                prefix_end.len(),
                deny(reason.len() as u32)
            );
            let data = format!("{reason}\") (data (i32.const 1024) \"{prefix}\") (data (i32.const 2048) \"{prefix_end}");
            (data, body)
        }
    };
    component_text::admission_with_state(&data, &body)
}

/// A validate component: values must start with `{` (a JSON object), or
/// the key is rejected with "value must be a JSON object".
pub fn json_object_validator() -> Vec<u8> {
    let reason = "value must be a JSON object";
    let text = format!(
        r#"(component
  (core module $m
    (memory (export "memory") 1)
    {REALLOC}
    (data (i32.const 64) "{reason}")
    ;; config ptr/len, key ptr/len, value ptr/len, lease
    (func (export "validate") (param i32 i32 i32 i32 i32 i32 i64) (result i32)
      (if (result i32) (i32.or (i32.eqz (local.get 5)) (i32.ne (i32.load8_u (local.get 4)) (i32.const 123)))
        (then {deny}) (else {ALLOW}))))
  (core instance $i (instantiate $m))
  (type $entry' (record (field "key" (list u8)) (field "value" (list u8)) (field "lease" s64)))
  (export $entry "entry" (type $entry'))
  {VERDICT_TYPES}
  (type $validate-ty (func (param "config" (list u8)) (param "entry" $entry) (result $verdict)))
  (func $validate (type $validate-ty)
    (canon lift (core func $i "validate") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "validate" (func $validate))
)"#,
        deny = deny(reason.len() as u32)
    );
    wat::parse_str(text).expect("validate component text parses")
}

/// A watch component that replaces each event's value with the config blob
/// (a fixed redaction), keeping everything else.
pub fn redact_to_config_watch() -> Vec<u8> {
    watch_component(REDACT_TO_CONFIG)
}

/// A watch component that traps on every event.
pub fn trapping_watch() -> Vec<u8> {
    watch_component("(unreachable)")
}

// The parameters arrive as one pointer to: config (ptr, len) at 0 and 4,
// then the 112-byte event at 8 (kind at +0, kv at +8 with its value list at
// +16, prev-kv at +56). The result is a pointer to the action: discriminant
// at 0, the replacement event at 8, with the same layout.
const REDACT_TO_CONFIG: &str = r#"
      (local $out i32)
      (local.set $out (i32.const 256))
      ;; the event as it came, then its value pointed at the config
      (memory.copy (i32.add (local.get $out) (i32.const 8)) (i32.add (local.get $args) (i32.const 8)) (i32.const 112))
      (i32.store8 (local.get $out) (i32.const 2))
      (i32.store (i32.add (local.get $out) (i32.const 24)) (i32.load (local.get $args)))
      (i32.store (i32.add (local.get $out) (i32.const 28)) (i32.load (i32.add (local.get $args) (i32.const 4))))
      (local.get $out)"#;

//! Reference plugin (watch): removes or masks fields of JSON values in the
//! events watchers of the bound prefix receive, in the event's key-value and
//! in its previous key-value (`prev_kv`) alike. The store keeps the full
//! values; only what watchers see changes.
//!
//! Config (JSON):
//!
//! ```json
//! {
//!   "remove": ["password", "credentials.*.secret"],
//!   "mask": ["email", "cards.*.number"],
//!   "mask_with": "***",
//!   "drop_non_json": false
//! }
//! ```
//!
//! - `remove`: field paths to delete.
//! - `mask`: field paths whose value (of any type) becomes the string
//!   `mask_with` (default `"***"`).
//! - A path is field names joined by `.`; `*` matches every field of an
//!   object and every element of an array (`items.*.token`).
//! - `drop_non_json`: drop events whose value is not JSON instead of
//!   delivering them unchanged (default false).
//!
//! An event none of whose values change passes untouched. A changed value is
//! written back as compact JSON with object keys in sorted order, the same
//! bytes on every member.

use cairn_guest_sdk::{KeyValue, WatchAction, WatchEvent};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub mask: Vec<String>,
    pub mask_with: Option<String>,
    #[serde(default)]
    pub drop_non_json: bool,
}

pub const DEFAULT_MASK: &str = "***";

pub fn transform(config: &[u8], event: &WatchEvent) -> WatchAction {
    let config: Config = match cairn_guest_sdk::config::json(config) {
        Ok(config) => config,
        Err(reason) => {
            // A watch hook cannot deny; withholding the event is the safe
            // choice when we cannot tell what to redact.
            cairn_guest_sdk::log::error(&reason);
            return WatchAction::Drop;
        }
    };
    redact_event(&config, event)
}

/// The action for `event` under `config`.
pub fn redact_event(config: &Config, event: &WatchEvent) -> WatchAction {
    let mut out = event.clone();
    let mut changed = false;
    for kv in out.key_values_mut() {
        match redact_kv(config, kv) {
            Outcome::Unchanged => {}
            Outcome::Changed => changed = true,
            Outcome::NotJson if config.drop_non_json => return WatchAction::Drop,
            Outcome::NotJson => {}
        }
    }
    if changed {
        WatchAction::Replace(out)
    } else {
        WatchAction::Pass
    }
}

enum Outcome {
    Unchanged,
    Changed,
    NotJson,
}

fn redact_kv(config: &Config, kv: &mut KeyValue) -> Outcome {
    // A delete event's kv has no value: nothing to redact, nothing wrong.
    if kv.value.is_empty() {
        return Outcome::Unchanged;
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(&kv.value) else {
        return Outcome::NotJson;
    };
    if !redact_value(config, &mut value) {
        return Outcome::Unchanged;
    }
    match serde_json::to_vec(&value) {
        Ok(bytes) => {
            kv.value = bytes;
            Outcome::Changed
        }
        Err(_) => Outcome::NotJson,
    }
}

/// Applies `config` to `value`; whether anything changed.
pub fn redact_value(config: &Config, value: &mut Value) -> bool {
    let mask = Value::String(config.mask_with.clone().unwrap_or_else(|| DEFAULT_MASK.into()));
    let mut changed = false;
    for path in &config.remove {
        let segments: Vec<&str> = path.split('.').collect();
        changed |= apply(value, &segments, &Edit::Remove);
    }
    for path in &config.mask {
        let segments: Vec<&str> = path.split('.').collect();
        changed |= apply(value, &segments, &Edit::Mask(&mask));
    }
    changed
}

enum Edit<'a> {
    Remove,
    Mask(&'a Value),
}

fn apply(value: &mut Value, path: &[&str], edit: &Edit) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let mut changed = false;
    match value {
        Value::Object(map) => {
            let names: Vec<String> = if *first == "*" {
                map.keys().cloned().collect()
            } else if map.contains_key(*first) {
                vec![(*first).to_string()]
            } else {
                Vec::new()
            };
            for name in names {
                if rest.is_empty() {
                    changed |= match edit {
                        Edit::Remove => map.remove(&name).is_some(),
                        Edit::Mask(mask) => mask_in_place(map.get_mut(&name), mask),
                    };
                } else if let Some(child) = map.get_mut(&name) {
                    changed |= apply(child, rest, edit);
                }
            }
        }
        Value::Array(items) if *first == "*" => {
            if rest.is_empty() {
                match edit {
                    Edit::Remove => {
                        changed = !items.is_empty();
                        items.clear();
                    }
                    Edit::Mask(mask) => {
                        for item in items.iter_mut() {
                            changed |= mask_in_place(Some(item), mask);
                        }
                    }
                }
            } else {
                for item in items.iter_mut() {
                    changed |= apply(item, rest, edit);
                }
            }
        }
        _ => {}
    }
    changed
}

fn mask_in_place(slot: Option<&mut Value>, mask: &Value) -> bool {
    match slot {
        Some(slot) if slot != mask => {
            *slot = mask.clone();
            true
        }
        _ => false,
    }
}

cairn_guest_sdk::export_watch!(transform);

#[cfg(test)]
mod tests {
    use cairn_guest_sdk::EventKind;
    use serde_json::json;

    use super::*;

    fn config(json: Value) -> Config {
        serde_json::from_value(json).unwrap()
    }

    fn kv(value: &[u8]) -> KeyValue {
        KeyValue {
            key: b"/users/1".to_vec(),
            value: value.to_vec(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            lease: 0,
        }
    }

    fn event(kind: EventKind, value: &[u8], prev: Option<&[u8]>) -> WatchEvent {
        WatchEvent {
            kind,
            kv: kv(value),
            prev_kv: prev.map(kv),
        }
    }

    #[test]
    fn removes_and_masks_nested_fields() {
        let cfg = config(json!({
            "remove": ["password", "creds.*.secret"],
            "mask": ["email", "cards.*.number"],
        }));
        let mut value = json!({
            "name": "ada",
            "password": "hunter2",
            "email": "ada@example.com",
            "creds": {"gh": {"secret": "s1", "user": "ada"}, "gl": {"secret": "s2"}},
            "cards": [{"number": 4111, "exp": "12/30"}, {"exp": "01/31"}],
        });
        assert!(redact_value(&cfg, &mut value));
        assert_eq!(
            value,
            json!({
                "name": "ada",
                "email": "***",
                "creds": {"gh": {"user": "ada"}, "gl": {}},
                "cards": [{"number": "***", "exp": "12/30"}, {"exp": "01/31"}],
            })
        );
    }

    #[test]
    fn untouched_events_pass() {
        let cfg = config(json!({"remove": ["password"]}));
        let e = event(EventKind::Put, br#"{"name":"ada"}"#, Some(br#"{"name":"bob"}"#));
        assert_eq!(redact_event(&cfg, &e), WatchAction::Pass);
    }

    #[test]
    fn prev_kv_and_delete_events_are_redacted() {
        let cfg = config(json!({"remove": ["password"], "mask_with": "[hidden]", "mask": ["pin"]}));
        let e = event(EventKind::Delete, b"", Some(br#"{"password":"x","pin":1234,"a":1}"#));
        let WatchAction::Replace(out) = redact_event(&cfg, &e) else {
            panic!("expected a replacement");
        };
        assert_eq!(out.kv, e.kv);
        assert_eq!(out.kind, EventKind::Delete);
        let prev = out.prev_kv.unwrap();
        assert_eq!(prev.value, br#"{"a":1,"pin":"[hidden]"}"#.to_vec());
        assert_eq!((prev.mod_revision, prev.version), (5, 3));
    }

    #[test]
    fn non_json_values_pass_or_drop() {
        let e = event(EventKind::Put, b"plain text", None);
        assert_eq!(redact_event(&config(json!({"remove": ["a"]})), &e), WatchAction::Pass);
        let drop = config(json!({"remove": ["a"], "drop_non_json": true}));
        assert_eq!(redact_event(&drop, &e), WatchAction::Drop);
    }

    #[test]
    fn bad_config_drops() {
        let e = event(EventKind::Put, br#"{"a":1}"#, None);
        assert_eq!(transform(b"{\"remov\": []}", &e), WatchAction::Drop);
        assert_eq!(transform(b"", &e), WatchAction::Drop);
    }

    #[test]
    fn the_export_glue_redacts() {
        let e = event(EventKind::Put, br#"{"a":1,"token":"t"}"#, None);
        let WatchAction::Replace(out) = transform(br#"{"remove": ["token"]}"#, &e) else {
            panic!("expected a replacement");
        };
        assert_eq!(out.kv.value, br#"{"a":1}"#.to_vec());
    }
}

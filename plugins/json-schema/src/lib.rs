//! Reference plugin (validate): every value under the bound prefix must be
//! JSON that conforms to a JSON Schema.
//!
//! Config: the JSON Schema itself (drafts 4, 6, 7, 2019-09 and 2020-12 by
//! its `$schema`; 2020-12 when absent), for example
//!
//! ```json
//! {"type": "object", "required": ["name"],
//!  "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}
//! ```
//!
//! `$ref`s must stay inside the schema: nothing can be fetched. `format` is
//! an annotation, as the 2020-12 draft says, not an assertion. A value that
//! is not JSON, or does not conform, is denied with the reasons found
//! (at most [`MAX_ERRORS`], e.g. `at '/age': must be >=0, but got -1`); a
//! schema that does not compile denies every write, with the compile error,
//! so a broken binding shows at once.

use cairn_guest_sdk::{Entry, Verdict};

/// The reasons a denial lists, at most; the rest are counted.
pub const MAX_ERRORS: usize = 5;

/// Where the schema lives for the compiler: a name, never fetched. boon
/// checks every schema against its draft's metaschema except those under
/// json-schema.org, and that check compiles all the bundled metaschemas
/// first: some 54 million instructions, on every call, since every call
/// gets a fresh instance. Naming the schema under json-schema.org skips it
/// (about 0.2 million instead) and [`check_schema`] does a cheap structural
/// check in its place.
const SCHEMA_URL: &str = "https://json-schema.org/cairn/plugin-config.json";

const TYPES: [&str; 7] = ["null", "boolean", "object", "array", "number", "string", "integer"];
const SCHEMA_KEYWORDS: [&str; 12] = [
    "additionalProperties",
    "additionalItems",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contentSchema",
    "items",
];
const SCHEMA_MAP_KEYWORDS: [&str; 6] = [
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependencies",
];
const SCHEMA_LIST_KEYWORDS: [&str; 5] = ["allOf", "anyOf", "oneOf", "prefixItems", "items"];
const COUNT_KEYWORDS: [&str; 8] = [
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minContains",
    "maxContains",
];
const NUMBER_KEYWORDS: [&str; 3] = ["minimum", "maximum", "multipleOf"];

pub fn validate(config: &[u8], entry: &Entry) -> Verdict {
    match check(config, &entry.value) {
        Ok(()) => Verdict::Allow,
        Err(reason) => Verdict::deny(reason),
    }
}

/// Whether `value` is JSON that conforms to the schema in `config`; the
/// error is the deny reason.
pub fn check(config: &[u8], value: &[u8]) -> Result<(), String> {
    let schema: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| format!("invalid plugin config: the schema is not JSON: {e}"))?;
    check_schema(&schema, "").map_err(|e| format!("invalid plugin config: {e}"))?;
    let mut compiler = boon::Compiler::new();
    let mut schemas = boon::Schemas::new();
    compiler
        .add_resource(SCHEMA_URL, schema)
        .map_err(|e| format!("invalid plugin config: {e}"))?;
    let index = compiler
        .compile(SCHEMA_URL, &mut schemas)
        .map_err(|e| format!("invalid plugin config: {e}"))?;
    let value: serde_json::Value = serde_json::from_slice(value).map_err(|e| format!("value is not JSON: {e}"))?;
    schemas.validate(&value, index).map_err(|e| summarize(&e))
}

/// The shape of the keywords a metaschema would check, for the keywords
/// whose malformed values boon would otherwise ignore.
pub fn check_schema(schema: &serde_json::Value, at: &str) -> Result<(), String> {
    use serde_json::Value;
    let object = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(object) => object,
        _ => return Err(format!("schema at '{at}' must be an object or a boolean")),
    };
    let bad = |keyword: &str, what: &str| Err(format!("'{at}/{keyword}' must be {what}"));
    for (keyword, value) in object {
        let keyword = keyword.as_str();
        let here = format!("{at}/{keyword}");
        match keyword {
            "type" => {
                let ok = |v: &Value| v.as_str().is_some_and(|t| TYPES.contains(&t));
                let valid = match value {
                    Value::Array(types) => !types.is_empty() && types.iter().all(ok),
                    single => ok(single),
                };
                if !valid {
                    return bad(keyword, "a type name or a list of type names");
                }
            }
            "required" if !value.as_array().is_some_and(|a| a.iter().all(Value::is_string)) => {
                return bad(keyword, "a list of strings");
            }
            "enum" if !value.is_array() => return bad(keyword, "a list"),
            "pattern" | "format" | "$ref" if !value.is_string() => return bad(keyword, "a string"),
            _ if COUNT_KEYWORDS.contains(&keyword) && value.as_u64().is_none() => {
                return bad(keyword, "a non-negative integer");
            }
            _ if NUMBER_KEYWORDS.contains(&keyword) && !value.is_number() => {
                return bad(keyword, "a number");
            }
            "exclusiveMinimum" | "exclusiveMaximum" if !(value.is_number() || value.is_boolean()) => {
                return bad(keyword, "a number");
            }
            _ => {}
        }
        if SCHEMA_LIST_KEYWORDS.contains(&keyword) {
            if let Value::Array(list) = value {
                for (i, item) in list.iter().enumerate() {
                    check_schema(item, &format!("{here}/{i}"))?;
                }
                continue;
            }
            if keyword != "items" {
                return bad(keyword, "a list of schemas");
            }
        }
        if SCHEMA_KEYWORDS.contains(&keyword) {
            check_schema(value, &here)?;
        }
        if SCHEMA_MAP_KEYWORDS.contains(&keyword) {
            let Value::Object(map) = value else {
                return bad(keyword, "an object");
            };
            for (name, sub) in map {
                // draft 4-7 `dependencies` may map to a list of names.
                if keyword == "dependencies" && sub.is_array() {
                    continue;
                }
                check_schema(sub, &format!("{here}/{name}"))?;
            }
        }
    }
    Ok(())
}

/// The leaf errors of boon's error tree, one line: the leaves say what is
/// wrong, the inner nodes only say where in the schema.
fn summarize(error: &boon::ValidationError) -> String {
    let mut leaves = Vec::new();
    collect_leaves(error, &mut leaves);
    let total = leaves.len();
    let mut reason = leaves
        .iter()
        .take(MAX_ERRORS)
        .map(|e| format!("at '{}': {}", e.instance_location, e.kind))
        .collect::<Vec<_>>()
        .join("; ");
    if total > MAX_ERRORS {
        reason.push_str(&format!("; and {} more", total - MAX_ERRORS));
    }
    format!("value does not match the schema: {reason}")
}

fn collect_leaves<'a, 's, 'v>(error: &'a boon::ValidationError<'s, 'v>, out: &mut Vec<&'a boon::ValidationError<'s, 'v>>) {
    if error.causes.is_empty() {
        out.push(error);
    }
    for cause in &error.causes {
        collect_leaves(cause, out);
    }
}

/// ahash (inside boon) asks getrandom for hash seeds; wasm32-unknown-unknown
/// has no randomness, and a plugin must not have any. Fixed bytes make the
/// seeds constants (plugins/.cargo/config.toml selects this backend).
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
unsafe extern "Rust" fn __getrandom_v03_custom(dest: *mut u8, len: usize) -> Result<(), getrandom::Error> {
    for i in 0..len {
        // SAFETY: getrandom hands us `len` writable bytes at `dest`.
        unsafe { dest.add(i).write((i as u8).wrapping_mul(0x9d) ^ 0x5c) };
    }
    Ok(())
}

cairn_guest_sdk::export_validate!(validate);

#[cfg(test)]
mod tests {
    use super::*;

    const PERSON: &[u8] = br#"{
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0}
        }
    }"#;

    #[test]
    fn conforming_values_pass() {
        assert_eq!(check(PERSON, br#"{"name": "ada", "age": 36}"#), Ok(()));
        assert_eq!(check(PERSON, br#"{"name": "ada"}"#), Ok(()));
    }

    #[test]
    fn violations_name_where_and_what() {
        let reason = check(PERSON, br#"{"name": "ada", "age": -1}"#).unwrap_err();
        assert!(reason.starts_with("value does not match the schema: at '/age':"), "{reason}");
        assert!(reason.contains("-1"), "{reason}");

        let reason = check(PERSON, br#"{"age": 3}"#).unwrap_err();
        assert!(reason.contains("name"), "{reason}");

        let reason = check(PERSON, br#"["not", "an", "object"]"#).unwrap_err();
        assert!(reason.contains("object"), "{reason}");
    }

    #[test]
    fn non_json_values_are_denied() {
        let reason = check(PERSON, b"name=ada").unwrap_err();
        assert!(reason.starts_with("value is not JSON:"), "{reason}");
    }

    #[test]
    fn broken_schemas_deny_with_the_config_error() {
        let reason = check(b"{not json", b"{}").unwrap_err();
        assert!(reason.starts_with("invalid plugin config:"), "{reason}");
        let reason = check(br#"{"type": 12}"#, b"{}").unwrap_err();
        assert!(reason.starts_with("invalid plugin config:"), "{reason}");
        let reason = check(br#"{"$ref": "https://example.com/s.json"}"#, b"{}").unwrap_err();
        assert!(reason.starts_with("invalid plugin config:"), "{reason}");
        let reason = check(br#"{"properties": {"a": {"minimum": "0"}}}"#, b"{}").unwrap_err();
        assert_eq!(reason, "invalid plugin config: '/properties/a/minimum' must be a number");
        let reason = check(br#"{"anyOf": [true, 3]}"#, b"{}").unwrap_err();
        assert_eq!(reason, "invalid plugin config: schema at '/anyOf/1' must be an object or a boolean");
        let reason = check(br#"{"type": ["string", "text"]}"#, b"{}").unwrap_err();
        assert!(reason.contains("'/type' must be a type name"), "{reason}");
    }

    #[test]
    fn refs_inside_the_schema_resolve() {
        let schema = br##"{
            "$defs": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}},
            "type": "object",
            "properties": {"http": {"$ref": "#/$defs/port"}, "tags": {"type": "array", "items": {"type": "string"}}},
            "additionalProperties": false
        }"##;
        assert_eq!(check(schema, br#"{"http": 80, "tags": ["a"]}"#), Ok(()));
        let reason = check(schema, br#"{"http": 0}"#).unwrap_err();
        assert!(reason.contains("at '/http'"), "{reason}");
        let reason = check(schema, br#"{"https": 443}"#).unwrap_err();
        assert!(reason.contains("https"), "{reason}");
    }

    #[test]
    fn many_errors_are_capped() {
        let schema = br#"{"type": "array", "items": {"type": "string"}}"#;
        let reason = check(schema, b"[1,2,3,4,5,6,7]").unwrap_err();
        assert_eq!(reason.matches("at '").count(), MAX_ERRORS, "{reason}");
        assert!(reason.ends_with("; and 2 more"), "{reason}");
    }

    #[test]
    fn long_reasons_fit_the_host_limit() {
        let names: Vec<String> = (0..2000).map(|i| format!("allowed-value-{i}")).collect();
        let schema = serde_json::to_vec(&serde_json::json!({"enum": names})).unwrap();
        let entry = Entry {
            key: b"k".to_vec(),
            value: b"\"other\"".to_vec(),
            lease: 0,
        };
        let Verdict::Deny(reason) = validate(&schema, &entry) else {
            panic!("expected a denial");
        };
        assert!(reason.len() <= cairn_guest_sdk::MAX_REASON_BYTES, "{}", reason.len());
        assert!(reason.starts_with("value does not match the schema: at '': "), "{reason}");
    }

    #[test]
    fn the_export_glue_maps_to_verdicts() {
        let entry = |v: &[u8]| Entry {
            key: b"k".to_vec(),
            value: v.to_vec(),
            lease: 0,
        };
        assert_eq!(validate(PERSON, &entry(br#"{"name":"x"}"#)), Verdict::Allow);
        assert!(matches!(validate(PERSON, &entry(b"{}")), Verdict::Deny(_)));
    }
}

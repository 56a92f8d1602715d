//! Write Cairn plugins in Rust: one function and one macro per plugin.
//!
//! A Cairn plugin is a WebAssembly component that implements exactly one of
//! the three worlds of `wit/plugin.wit` (package `cairn:plugin@0.1.0`):
//!
//! | hook        | macro                      | your function                                           |
//! |-------------|----------------------------|---------------------------------------------------------|
//! | `admission` | [`export_admission!`]      | `fn(config: &[u8], request: &WriteRequest) -> Verdict`  |
//! | `validate`  | [`export_validate!`]       | `fn(config: &[u8], entry: &Entry) -> Verdict`           |
//! | `watch`     | [`export_watch!`]          | `fn(config: &[u8], event: &WatchEvent) -> WatchAction`  |
//!
//! ```ignore
//! use cairn_guest_sdk::{Entry, Verdict};
//!
//! fn no_empty_values(_config: &[u8], entry: &Entry) -> Verdict {
//!     if entry.value.is_empty() {
//!         Verdict::Deny("empty values are not allowed".into())
//!     } else {
//!         Verdict::Allow
//!     }
//! }
//!
//! cairn_guest_sdk::export_validate!(no_empty_values);
//! ```
//!
//! Build the crate as a `cdylib` for `wasm32-unknown-unknown` and turn the
//! core module into a component with `plugins/componentize` (`make plugins`
//! does both for the plugins of this repository). docs/plugins.md has the
//! whole guide and the determinism rules a plugin must follow.
//!
//! `wasm32-wasip2` builds work as well and give a component directly, but
//! Rust's std there imports WASI (`wasi:cli/*`, `wasi:io/*`; `wasi:random`
//! for `HashMap::new()`, `wasi:clocks` for time), which Cairn's host does not
//! provide, so such plugins are refused at install. Use
//! `wasm32-unknown-unknown`, which imports nothing the SDK does not declare.
//!
//! Everything the host offers is here: [`state`] (read-only reads at the
//! revision being applied; admission and validate only) and [`log`]
//! (diagnostics). [`config`] parses the binding's config blob as JSON.

// The wit-bindgen output refers to the runtime through this crate, so that
// plugins need no direct dependency on wit-bindgen.
extern crate self as cairn_guest_sdk;

#[doc(hidden)]
pub mod __rt {
    pub use wit_bindgen;
}

/// Raw wit-bindgen bindings, one module per world. Plugins normally use the
/// re-exports and macros at the crate root instead.
#[doc(hidden)]
// Generated code: the lowering of a many-field record is a many-argument call.
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    /// The admission world. Its generation also defines the shared `types`,
    /// `state` and `log` interfaces, which the other worlds reuse.
    pub mod admission {
        wit_bindgen::generate!({
            world: "admission",
            path: "../wit",
            runtime_path: "::cairn_guest_sdk::__rt::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "__cairn_export_admission_world",
            default_bindings_module: "::cairn_guest_sdk::bindings::admission",
            additional_derives: [Clone, PartialEq, Eq],
        });
    }

    pub mod validate {
        wit_bindgen::generate!({
            world: "validate",
            path: "../wit",
            runtime_path: "::cairn_guest_sdk::__rt::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "__cairn_export_validate_world",
            default_bindings_module: "::cairn_guest_sdk::bindings::validate",
            with: {
                "cairn:plugin/types@0.1.0": crate::bindings::admission::cairn::plugin::types,
                "cairn:plugin/state@0.1.0": crate::bindings::admission::cairn::plugin::state,
                "cairn:plugin/log@0.1.0": crate::bindings::admission::cairn::plugin::log,
            },
        });
    }

    pub mod watch {
        wit_bindgen::generate!({
            world: "watch",
            path: "../wit",
            runtime_path: "::cairn_guest_sdk::__rt::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "__cairn_export_watch_world",
            default_bindings_module: "::cairn_guest_sdk::bindings::watch",
            with: {
                "cairn:plugin/types@0.1.0": crate::bindings::admission::cairn::plugin::types,
                "cairn:plugin/log@0.1.0": crate::bindings::admission::cairn::plugin::log,
            },
        });
    }
}

mod helpers;

pub mod config;
pub mod log;
pub mod state;

pub use bindings::admission::cairn::plugin::types::{
    DeleteOp, Entry, EventKind, Identity, KeyValue, Mutation, PutOp, RequestKind, Verdict, WatchAction, WatchEvent, WriteRequest,
};
pub use helpers::{key_str, prefix_end, truncate_reason, value_str, MAX_REASON_BYTES};

/// Exports `$f: fn(&[u8], &WriteRequest) -> Verdict` as the `admit` function
/// of the `admission` world. Use it once per plugin crate, at module level.
#[macro_export]
macro_rules! export_admission {
    ($f:path) => {
        #[doc(hidden)]
        pub struct __CairnAdmission;

        impl $crate::bindings::admission::Guest for __CairnAdmission {
            fn admit(config: ::std::vec::Vec<u8>, request: $crate::WriteRequest) -> $crate::Verdict {
                let f: fn(&[u8], &$crate::WriteRequest) -> $crate::Verdict = $f;
                f(&config, &request)
            }
        }

        $crate::bindings::admission::__cairn_export_admission_world!(
            __CairnAdmission with_types_in $crate::bindings::admission
        );
    };
}

/// Exports `$f: fn(&[u8], &Entry) -> Verdict` as the `validate` function of
/// the `validate` world. Use it once per plugin crate, at module level.
#[macro_export]
macro_rules! export_validate {
    ($f:path) => {
        #[doc(hidden)]
        pub struct __CairnValidate;

        impl $crate::bindings::validate::Guest for __CairnValidate {
            fn validate(config: ::std::vec::Vec<u8>, entry: $crate::Entry) -> $crate::Verdict {
                let f: fn(&[u8], &$crate::Entry) -> $crate::Verdict = $f;
                f(&config, &entry)
            }
        }

        $crate::bindings::validate::__cairn_export_validate_world!(
            __CairnValidate with_types_in $crate::bindings::validate
        );
    };
}

/// Exports `$f: fn(&[u8], &WatchEvent) -> WatchAction` as the `transform`
/// function of the `watch` world. Use it once per plugin crate, at module
/// level. A watch plugin must not call [`state`]: the watch world does not
/// import it, and componentizing such a module fails.
#[macro_export]
macro_rules! export_watch {
    ($f:path) => {
        #[doc(hidden)]
        pub struct __CairnWatch;

        impl $crate::bindings::watch::Guest for __CairnWatch {
            fn transform(
                config: ::std::vec::Vec<u8>,
                event: $crate::WatchEvent,
            ) -> $crate::WatchAction {
                let f: fn(&[u8], &$crate::WatchEvent) -> $crate::WatchAction = $f;
                f(&config, &event)
            }
        }

        $crate::bindings::watch::__cairn_export_watch_world!(
            __CairnWatch with_types_in $crate::bindings::watch
        );
    };
}

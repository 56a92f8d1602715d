//! Wasm plugins: components bound to key ranges, run by every member on
//! committed writes (admission, validate) and by the member serving a watch
//! (watch).
//!
//! - [`runtime`]: the deterministic wasmtime host (fuel, memory caps,
//!   compiled-component cache, failure kinds).
//! - [`registry`]: the replicated bindings, stored in RocksDB.
//! - [`hooks`]: what apply and watch delivery ask: may this write go ahead,
//!   and what does this watcher see.

#[cfg(test)]
mod apply_test;
pub mod bindings;
pub mod hooks;
pub mod registry;
pub mod runtime;
#[cfg(test)]
mod runtime_test;

use std::fmt;

pub use bindings::{Entry, KeyValue as WitKeyValue, Verdict, WatchAction, WatchEvent, WriteRequest};
pub use registry::Plugins;
pub use runtime::{Allocation, CallLimits, CompileError, EmptyState, Failure, Runtime, StateView};

use crate::proto::cairnpb::PluginHook;

/// Where a plugin runs; each hook has its own WIT world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Admission,
    Validate,
    Watch,
}

impl Hook {
    pub fn from_proto(raw: i32) -> Option<Hook> {
        match PluginHook::try_from(raw).ok()? {
            PluginHook::Admission => Some(Hook::Admission),
            PluginHook::Validate => Some(Hook::Validate),
            PluginHook::Watch => Some(Hook::Watch),
            PluginHook::Unspecified => None,
        }
    }

    pub fn to_proto(self) -> PluginHook {
        match self {
            Hook::Admission => PluginHook::Admission,
            Hook::Validate => PluginHook::Validate,
            Hook::Watch => PluginHook::Watch,
        }
    }

    pub fn parse(s: &str) -> Option<Hook> {
        match s {
            "admission" => Some(Hook::Admission),
            "validate" => Some(Hook::Validate),
            "watch" => Some(Hook::Watch),
            _ => None,
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Admission => "admission",
            Hook::Validate => "validate",
            Hook::Watch => "watch",
        })
    }
}

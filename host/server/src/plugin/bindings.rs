//! Host-side bindings for the three worlds of `wit/plugin.wit`. The
//! `admission` world generates the shared interfaces; the other two reuse
//! them so that one host implementation serves every world.

#![allow(clippy::all, missing_docs)]

pub mod admission {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "admission",
        additional_derives: [PartialEq],
    });
}

pub mod validate {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "validate",
        with: {
            "cairn:plugin/types": super::admission::cairn::plugin::types,
            "cairn:plugin/state": super::admission::cairn::plugin::state,
            "cairn:plugin/log": super::admission::cairn::plugin::log,
        },
    });
}

pub mod watch {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "watch",
        with: {
            "cairn:plugin/types": super::admission::cairn::plugin::types,
            "cairn:plugin/log": super::admission::cairn::plugin::log,
        },
    });
}

pub use admission::cairn::plugin::log::Level;
pub use admission::cairn::plugin::types::{
    DeleteOp, Entry, EventKind, Identity, KeyValue, Mutation, PutOp, RequestKind, Verdict, WatchAction, WatchEvent, WriteRequest,
};

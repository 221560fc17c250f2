//! The todoapp wire contract: package-less `User` and `ToDo` services.
//!
//! Everything here is generated from `protos/`; domain types and validation
//! live in the services, which convert at their edge.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

// The protos declare no package, so prost writes them to `_.rs`.
include!(concat!(env!("OUT_DIR"), "/_.rs"));

/// Encoded `FileDescriptorSet` of every proto (imports included), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/todoapp_descriptor.bin"));

/// Fully qualified gRPC service names, as clients see them.
pub mod service_names {
    pub const USER: &str = "User";
    pub const TODO: &str = "ToDo";
}

/// Largest ListToDo reply the todo service may be configured to send
/// (its `list_max_bytes` is at most this); the gateway relays replies up
/// to [`MAX_RELAYED_REPLY_BYTES`], derived from it.
pub const MAX_LIST_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Largest backend reply the gateway relays: the largest ListToDo page
/// plus room for gRPC framing.
pub const MAX_RELAYED_REPLY_BYTES: usize = MAX_LIST_REPLY_BYTES + 64 * 1024;

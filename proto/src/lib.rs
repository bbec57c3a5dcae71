//! Vishwa's wire protocol. Generated types stop at the edge: each crate converts them in its
//! own `api/convert.rs`.

#![allow(unreachable_pub, clippy::all)]

/// Version 1 of the protocol: the client API (`Vishwa`) and the worker API (`WorkerApi`).
pub mod v1 {
    tonic::include_proto!("vishwa.v1");
}

pub use v1::*;

/// The encoded `FileDescriptorSet` of the protocol, served by gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vishwa_descriptor");

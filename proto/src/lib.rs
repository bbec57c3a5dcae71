//! Vishwa's wire protocol. Generated types stop at the edge: each crate converts them in its
//! own `api/convert.rs`.

#![allow(unreachable_pub, clippy::all)]

/// Version 1 of the protocol: the client API (`Vishwa`) and the worker API (`WorkerApi`).
pub mod v1 {
    tonic::include_proto!("vishwa.v1");
}

pub use v1::*;

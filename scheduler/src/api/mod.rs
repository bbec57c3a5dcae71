//! The gRPC services: thin handlers that convert, call the engine or read the store, and map
//! errors to statuses in one place.

mod approvals;
mod artifacts;
mod assets;
mod client;
mod convert;
mod error;
mod follow;
pub mod limits;
mod retention;
pub(crate) mod schedule;
mod security;
pub mod standard;
mod worker;

pub use client::ClientApi;
pub use error::ApiError;
pub use worker::WorkerApi;

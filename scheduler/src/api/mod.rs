//! The gRPC services: thin handlers that convert, call the engine or read the store, and map
//! errors to statuses in one place.

mod artifacts;
mod assets;
mod client;
mod convert;
mod error;
mod follow;
pub mod limits;
mod retention;
mod schedule;
mod security;
mod worker;

pub use client::ClientApi;
pub use error::ApiError;
pub use worker::WorkerApi;

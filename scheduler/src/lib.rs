//! Vishwa's scheduler: DAG model, run state machine, store, dispatch, cron and gRPC services.

pub mod api;
pub mod artifacts;
pub mod auth;
pub mod blobs;
pub mod bundle;
pub mod clock;
pub mod console;
pub mod cron;
pub mod dag;
pub mod engine;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod run;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tls;

pub use server::{Listeners, Scheduler, SchedulerConfig, ServeError, serve};

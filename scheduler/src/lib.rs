//! Vishwa's scheduler: DAG model, run state machine, store, dispatch, cron and gRPC services.

pub mod cron;
pub mod dag;

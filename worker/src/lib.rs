//! Vishwa's worker: registers with the scheduler, pulls tasks and runs them through an
//! [`executor::Executor`].

pub mod executor;

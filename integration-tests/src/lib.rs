//! Shared helpers for Vishwa's integration tests: a Docker connection that fails loudly, locally
//! built test images (no registry is needed), polling for readiness, a scheduler and worker
//! started in the test process, and the containers of a run found by label.

pub mod cluster;
pub mod containers;
pub mod docker;
pub mod images;
pub mod poll;

//! Shared helpers for Vishwa's integration tests: a Docker connection that fails loudly, locally
//! built test images (no registry is needed) and polling for readiness.

pub mod docker;
pub mod images;
pub mod poll;

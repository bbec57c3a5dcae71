//! Shared helpers for Vishwa's integration tests.

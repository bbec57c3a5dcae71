//! The process executor: one local process group per attempt, on the worker's host.

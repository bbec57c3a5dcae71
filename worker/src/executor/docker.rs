//! The Docker executor: one container per attempt, through bollard.

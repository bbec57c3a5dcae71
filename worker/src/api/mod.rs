//! The worker's side of the protocol: conversions from generated types.

pub mod convert;

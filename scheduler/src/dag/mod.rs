//! DAG files: YAML text → validated [`Dag`] on a petgraph graph. Pure: no IO here.

mod model;

pub use model::*;

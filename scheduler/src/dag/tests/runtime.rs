//! Serving runs of a validated DAG: params, fan-out items, instance names, graph views.

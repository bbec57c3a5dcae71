//! Roles and the one table that says which role each RPC needs.

use std::fmt;

use serde::Deserialize;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including secrets, submissions and the audit log.
    Admin,
    /// What a viewer may, plus starting, stopping and steering runs, schedules and workers.
    Operator,
    /// Reads only: DAGs, runs, logs, workers.
    Viewer,
    /// The worker service only.
    Worker,
}

impl Role {
    /// Lower-case name, as in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Worker => "worker",
        }
    }

    /// Whether a caller with this role may call an RPC that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        match needed {
            Role::Admin => self == Role::Admin,
            Role::Operator => matches!(self, Role::Admin | Role::Operator),
            Role::Viewer => matches!(self, Role::Admin | Role::Operator | Role::Viewer),
            Role::Worker => matches!(self, Role::Admin | Role::Worker),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every RPC of both services with the least role that may call it. A method missing here
/// needs admin; a unit test checks the table against the proto file, so a new RPC cannot be
/// forgotten.
pub const METHOD_ROLES: &[(&str, Role)] = &[
    // Client service: reads.
    ("/vishwa.v1.Vishwa/ListDags", Role::Viewer),
    ("/vishwa.v1.Vishwa/GetDag", Role::Viewer),
    ("/vishwa.v1.Vishwa/ListRuns", Role::Viewer),
    ("/vishwa.v1.Vishwa/GetRun", Role::Viewer),
    ("/vishwa.v1.Vishwa/WatchRun", Role::Viewer),
    ("/vishwa.v1.Vishwa/StreamLogs", Role::Viewer),
    ("/vishwa.v1.Vishwa/ListWorkers", Role::Viewer),
    ("/vishwa.v1.Vishwa/ListArtifacts", Role::Viewer),
    ("/vishwa.v1.Vishwa/GetArtifact", Role::Viewer),
    ("/vishwa.v1.Vishwa/FindArtifact", Role::Viewer),
    ("/vishwa.v1.Vishwa/ListAssets", Role::Viewer),
    // Client service: steering runs, schedules and workers.
    ("/vishwa.v1.Vishwa/TriggerRun", Role::Operator),
    ("/vishwa.v1.Vishwa/CancelRun", Role::Operator),
    ("/vishwa.v1.Vishwa/RetryRun", Role::Operator),
    ("/vishwa.v1.Vishwa/ApproveStage", Role::Operator),
    ("/vishwa.v1.Vishwa/DrainWorker", Role::Operator),
    ("/vishwa.v1.Vishwa/PauseDag", Role::Operator),
    ("/vishwa.v1.Vishwa/ResumeDag", Role::Operator),
    ("/vishwa.v1.Vishwa/Backfill", Role::Operator),
    // Client service: changing what runs, secrets, the audit log.
    ("/vishwa.v1.Vishwa/SubmitDag", Role::Admin),
    ("/vishwa.v1.Vishwa/HasBundle", Role::Admin),
    ("/vishwa.v1.Vishwa/UploadBundle", Role::Admin),
    ("/vishwa.v1.Vishwa/SetSecret", Role::Admin),
    ("/vishwa.v1.Vishwa/ListSecrets", Role::Admin),
    ("/vishwa.v1.Vishwa/DeleteSecret", Role::Admin),
    ("/vishwa.v1.Vishwa/ListAudit", Role::Admin),
    // Deleting history cannot be undone: admin only.
    ("/vishwa.v1.Vishwa/DeleteRuns", Role::Admin),
    ("/vishwa.v1.Vishwa/PruneRuns", Role::Admin),
    // Worker service.
    ("/vishwa.v1.WorkerApi/Register", Role::Worker),
    ("/vishwa.v1.WorkerApi/Heartbeat", Role::Worker),
    ("/vishwa.v1.WorkerApi/Tasks", Role::Worker),
    ("/vishwa.v1.WorkerApi/ReportStarted", Role::Worker),
    ("/vishwa.v1.WorkerApi/PushLogs", Role::Worker),
    ("/vishwa.v1.WorkerApi/ReportResult", Role::Worker),
    ("/vishwa.v1.WorkerApi/FetchBundle", Role::Worker),
    ("/vishwa.v1.WorkerApi/UploadArtifact", Role::Worker),
    ("/vishwa.v1.WorkerApi/FetchArtifact", Role::Worker),
    ("/vishwa.v1.WorkerApi/ArtifactTransfer", Role::Worker),
    ("/vishwa.v1.WorkerApi/CompleteArtifactUpload", Role::Worker),
];

/// The standard services beside Vishwa's (`api::standard`), by path prefix, with the least
/// role that may call them. Health is not here: it takes no token (see [`is_open`]).
pub const STANDARD_ROLES: &[(&str, Role)] = &[
    ("/grpc.reflection.v1.ServerReflection/", Role::Viewer),
    ("/grpc.reflection.v1alpha.ServerReflection/", Role::Viewer),
];

/// Whether `path` takes no token at all: the health service, which load balancers and
/// probes call without a secret (like `/healthz` on the HTTP port).
pub fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

/// The least role that may call `path` (`/package.Service/Method`); unknown paths need admin.
pub fn role_needed(path: &str) -> Role {
    METHOD_ROLES
        .iter()
        .find(|(method, _)| *method == path)
        .or_else(|| STANDARD_ROLES.iter().find(|(p, _)| path.starts_with(p)))
        .map_or(Role::Admin, |(_, role)| *role)
}

/// The method's short name (`TriggerRun`) for messages and the log.
pub fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const PROTO: &str = include_str!("../../../proto/proto/vishwa.proto");

    /// Every `rpc` of every service in the proto file, as request paths.
    fn rpcs_in_proto() -> BTreeSet<String> {
        let mut paths = BTreeSet::new();
        let mut service = None;
        for line in PROTO.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().map(str::to_owned);
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                let service = service.as_deref().expect("rpc outside a service");
                paths.insert(format!("/vishwa.v1.{service}/{name}"));
            }
        }
        paths
    }

    #[test]
    fn every_rpc_of_both_services_has_exactly_one_entry() {
        let in_proto = rpcs_in_proto();
        assert!(in_proto.len() > 20, "the proto parse found too few rpcs");
        let in_table: BTreeSet<String> =
            METHOD_ROLES.iter().map(|(m, _)| (*m).to_owned()).collect();
        assert_eq!(
            in_table.len(),
            METHOD_ROLES.len(),
            "a method is listed twice"
        );
        let missing: Vec<_> = in_proto.difference(&in_table).collect();
        assert!(
            missing.is_empty(),
            "rpcs without a role in METHOD_ROLES: {missing:?}"
        );
        let stale: Vec<_> = in_table.difference(&in_proto).collect();
        assert!(
            stale.is_empty(),
            "METHOD_ROLES lists rpcs the proto lacks: {stale:?}"
        );
    }

    #[test]
    fn worker_methods_need_the_worker_role_and_client_methods_never_do() {
        for (method, role) in METHOD_ROLES {
            let worker_service = method.starts_with("/vishwa.v1.WorkerApi/");
            assert_eq!(*role == Role::Worker, worker_service, "{method}");
        }
    }

    #[test]
    fn roles_nest_and_the_worker_role_stands_apart() {
        use Role::*;
        let cases = [
            (Admin, [true, true, true, true]),
            (Operator, [false, true, true, false]),
            (Viewer, [false, false, true, false]),
            (Worker, [false, false, false, true]),
        ];
        for (caller, expect) in cases {
            for (needed, allowed) in [Admin, Operator, Viewer, Worker].into_iter().zip(expect) {
                assert_eq!(
                    caller.allows(needed),
                    allowed,
                    "{caller} calling a {needed} rpc"
                );
            }
        }
    }

    #[test]
    fn health_is_open_and_reflection_needs_a_viewer() {
        assert!(is_open("/grpc.health.v1.Health/Check"));
        assert!(!is_open("/vishwa.v1.Vishwa/GetRun"));
        assert_eq!(
            role_needed("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Role::Viewer
        );
    }

    #[test]
    fn unknown_methods_need_admin() {
        assert_eq!(role_needed("/vishwa.v1.Vishwa/Nope"), Role::Admin);
        assert_eq!(role_needed("/vishwa.v1.Vishwa/GetRun"), Role::Viewer);
        assert_eq!(method_name("/vishwa.v1.Vishwa/GetRun"), "GetRun");
    }
}

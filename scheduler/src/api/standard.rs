//! The standard gRPC services beside Vishwa's own, on the same port: health checking
//! (`grpc.health.v1.Health`, what load balancers and `grpc_health_probe` ask) and server
//! reflection (v1 and v1alpha, so `grpcurl` and other clients work without the .proto files).
//! Health takes no token; reflection needs a viewer's (see `auth::role_needed`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tonic_reflection::server::{v1, v1alpha};

use crate::store::Store;

/// The services health reports on: the whole server (`""`) and each of Vishwa's.
const SERVICES: [&str; 3] = ["", "vishwa.v1.Vishwa", "vishwa.v1.WorkerApi"];

/// The health service, SERVING while the engine runs: NOT_SERVING from the moment the
/// scheduler begins to stop or its store can no longer write.
pub async fn health(
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> HealthServer<impl Health> {
    let (reporter, server) = tonic_health::server::health_reporter();
    set_all(&reporter, ServingStatus::Serving).await;
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = store.wait_write_failure() => {}
        }
        set_all(&reporter, ServingStatus::NotServing).await;
    });
    server
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Server reflection, v1.
pub fn reflection_v1()
-> Result<v1::ServerReflectionServer<impl v1::ServerReflection>, tonic_reflection::server::Error> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb_descriptors())
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
}

/// Server reflection, v1alpha (what older clients ask).
pub fn reflection_v1alpha() -> Result<
    v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb_descriptors())
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
}

fn pb_descriptors() -> &'static [u8] {
    vishwa_proto::FILE_DESCRIPTOR_SET
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;
    use tonic::transport::server::TcpIncoming;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Status;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn health_is_serving_until_the_scheduler_stops() {
        let shutdown = CancellationToken::new();
        let service = health(Arc::new(MemoryStore::new()), shutdown.clone()).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let status = |client: &mut HealthClient<_>, service: &str| {
            let mut client = client.clone();
            let request = HealthCheckRequest {
                service: service.to_owned(),
            };
            async move { client.check(request).await.unwrap().into_inner().status }
        };
        for service in SERVICES {
            assert_eq!(status(&mut client, service).await, Status::Serving as i32);
        }
        shutdown.cancel();
        let mut last = 0;
        for _ in 0..100 {
            last = status(&mut client, "vishwa.v1.Vishwa").await;
            if last == Status::NotServing as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(last, Status::NotServing as i32);
        assert_eq!(status(&mut client, "").await, Status::NotServing as i32);
    }
}

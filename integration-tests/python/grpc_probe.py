"""A gRPC client that never compiled Vishwa's protos: it lists the scheduler's services
through server reflection (with a bearer token) and asks the health service (without one)
whether the server and Vishwa's services are SERVING. Prints one JSON object.

Usage: grpc_probe.py HOST:PORT TOKEN|-
"""

import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def main():
    target, token = sys.argv[1], sys.argv[2]
    metadata = [] if token == "-" else [("authorization", "Bearer " + token)]
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=20)

    result = {}
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    try:
        requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        responses = list(stub.ServerReflectionInfo(requests, metadata=metadata, timeout=20))
        services = [s.name for s in responses[0].list_services_response.service]
        result["services"] = sorted(services)
        # The descriptor of Vishwa's client service, fetched by name: it names the RPCs.
        requests = iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="vishwa.v1.Vishwa")])
        responses = list(stub.ServerReflectionInfo(requests, metadata=metadata, timeout=20))
        files = responses[0].file_descriptor_response.file_descriptor_proto
        from google.protobuf import descriptor_pb2

        methods = []
        for raw in files:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            for service in proto.service:
                if service.name == "Vishwa":
                    methods.extend(m.name for m in service.method)
        result["vishwa_methods"] = sorted(methods)
    except grpc.RpcError as e:
        result["reflection_error"] = e.code().name

    health = health_pb2_grpc.HealthStub(channel)
    statuses = {}
    for service in ["", "vishwa.v1.Vishwa", "vishwa.v1.WorkerApi"]:
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=20)
        statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    result["health"] = statuses
    print(json.dumps(result))


if __name__ == "__main__":
    main()

//! gRPC server reflection on the controller's port, as grpc-go serves it for 0.9.0
//! (`grpcurl list`, `grpcurl describe`): asked over real TLS (h2) with the reflection
//! client, without credentials, in both protocol versions.

use crate::support;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use prometheus_client::registry::Registry;
use prost::Message;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tonic_reflection::pb::{v1, v1alpha};

use jumpstarter_controller::auth::AuthMetrics;
use jumpstarter_controller::service::{ServiceMetrics, Services, TokenSigners};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::embedded::EmbeddedStore;
use jumpstarter_token::SigningKey;

/// Upper bound of every call.
const WAIT: StdDuration = StdDuration::from_secs(20);

#[tokio::test]
async fn reflection_lists_and_describes_the_services_in_both_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("state.redb")).expect("store");
    let (ca, cert) = support::localhost_pki("reflection-ca", OffsetDateTime::now_utc());
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let services = Services::new(
        store,
        Arc::new(Settings::example(
            "lab",
            "localhost:8082",
            "r.example.test:443",
        )),
        TokenSigners {
            issuer: support::token_issuer(),
            router_key: SigningKey::generate().expect("router key"),
        },
        Arc::new(AuthMetrics::new(&mut registry)),
        Arc::new(ServiceMetrics::new(&mut registry)),
        shutdown.clone(),
    );
    let grpc = support::LoopbackGrpc::serve(&services, &cert, &ca, shutdown).await;
    let channel = grpc.endpoint(WAIT).connect().await.expect("connect");

    // v1: list, then the file that defines ControllerService.
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let requests = [
        v1::server_reflection_request::MessageRequest::ListServices(String::new()),
        v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "jumpstarter.v1.ControllerService".into(),
        ),
    ]
    .map(|message_request| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message_request),
    });
    let mut answers = tokio::time::timeout(
        WAIT,
        client.server_reflection_info(tokio_stream::iter(requests)),
    )
    .await
    .expect("in time")
    .expect("reflection call")
    .into_inner();
    let first = answers.message().await.expect("ok").expect("answer");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        first.message_response
    else {
        panic!("not a service list: {first:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "jumpstarter.v1.ControllerService",
        "jumpstarter.client.v1.ClientService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    let second = answers.message().await.expect("ok").expect("answer");
    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        second.message_response
    else {
        panic!("not a file descriptor: {second:?}");
    };
    let methods: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("decode"))
        .flat_map(|file| file.service)
        .filter(|service| service.name() == "ControllerService")
        .flat_map(|service| service.method)
        .map(|method| method.name().to_owned())
        .collect();
    for expected in ["Register", "Listen", "Status", "Dial", "RequestLease"] {
        assert!(
            methods.iter().any(|m| m == expected),
            "{expected}: {methods:?}"
        );
    }

    // v1alpha, which older grpcurl and grpc-python's reflection client use.
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = tokio::time::timeout(
        WAIT,
        alpha.server_reflection_info(tokio_stream::iter([request])),
    )
    .await
    .expect("in time")
    .expect("v1alpha reflection call")
    .into_inner();
    let answer = answers.message().await.expect("ok").expect("answer");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "jumpstarter.client.v1.ClientService"),
        "{list:?}"
    );
}

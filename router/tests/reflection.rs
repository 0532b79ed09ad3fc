//! gRPC server reflection on the router's port, as 0.9.0's router serves it: over real
//! TLS (h2), without credentials; it advertises the router's services, not the
//! controller's.

use crate::support;

use support::{WAIT, start};
use tonic_reflection::pb::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_router_services() {
    let router = start(|_| {}).await;
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(router.channel().await);
    let requests = [
        v1::server_reflection_request::MessageRequest::ListServices(String::new()),
        v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "jumpstarter.v1.RouterService".into(),
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
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "jumpstarter.v1.RouterService",
        ]
    );
    let second = answers.message().await.expect("ok").expect("answer");
    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        second.message_response
    else {
        panic!("not a file descriptor: {second:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

//! The generated Rust code: service names, servers and clients exist, and
//! messages encode to the bytes the protobuf wire format prescribes.

use jumpstarter_proto::jumpstarter::client::v1 as client_v1;
use jumpstarter_proto::jumpstarter::v1;
use prost::Message as _;

#[test]
fn services_have_their_grpc_names() {
    use client_v1::client_service_server as client;
    use v1::{
        controller_service_server as controller, exporter_service_server as exporter,
        router_service_server as router,
    };
    let generated = [
        controller::SERVICE_NAME,
        exporter::SERVICE_NAME,
        router::SERVICE_NAME,
        client::SERVICE_NAME,
    ];
    assert_eq!(
        generated,
        [
            "jumpstarter.v1.ControllerService",
            "jumpstarter.v1.ExporterService",
            "jumpstarter.v1.RouterService",
            "jumpstarter.client.v1.ClientService",
        ]
    );
}

#[test]
fn clients_and_servers_are_generated() {
    use tonic::transport::Channel;
    // Naming the constructors is enough to prove the code exists with the
    // transport-based client; nothing is connected.
    let clients: [fn(Channel) -> (); 4] = [
        |c| {
            drop(v1::controller_service_client::ControllerServiceClient::new(
                c,
            ))
        },
        |c| drop(v1::exporter_service_client::ExporterServiceClient::new(c)),
        |c| drop(v1::router_service_client::RouterServiceClient::new(c)),
        |c| {
            drop(client_v1::client_service_client::ClientServiceClient::new(
                c,
            ))
        },
    ];
    assert_eq!(clients.len(), 4);
    fn server_of<S: v1::router_service_server::RouterService>(
        service: S,
    ) -> v1::router_service_server::RouterServiceServer<S> {
        v1::router_service_server::RouterServiceServer::new(service)
    }
    let _ = server_of::<NoRouter>;
}

/// Stand-in router used only to instantiate the generated server type.
struct NoRouter;

#[tonic::async_trait]
impl v1::router_service_server::RouterService for NoRouter {
    type StreamStream =
        tonic::codegen::tokio_stream::Empty<Result<v1::StreamResponse, tonic::Status>>;

    async fn stream(
        &self,
        _request: tonic::Request<tonic::Streaming<v1::StreamRequest>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("test stand-in"))
    }
}

#[test]
fn router_frame_encodes_to_known_bytes() {
    let frame = v1::StreamRequest {
        payload: b"hi".to_vec(),
        frame_type: v1::FrameType::Ping.into(),
    };
    // Field 1, length-delimited "hi"; field 2, varint 6.
    let expected = [0x0a, 0x02, b'h', b'i', 0x10, 0x06];
    assert_eq!(frame.encode_to_vec(), expected);
    let decoded = v1::StreamResponse::decode(&expected[..]).expect("valid frame");
    assert_eq!(decoded.payload, b"hi");
    assert_eq!(decoded.frame_type(), v1::FrameType::Ping);
}

#[test]
fn optional_fields_distinguish_unset_from_default() {
    let unset = v1::StatusResponse {
        leased: false,
        lease_name: None,
        client_name: None,
    };
    assert!(unset.encode_to_vec().is_empty());
    let empty_name = v1::StatusResponse {
        lease_name: Some(String::new()),
        ..unset
    };
    // Field 2 present with zero length.
    assert_eq!(empty_name.encode_to_vec(), [0x12, 0x00]);
}

#[test]
fn descriptor_set_carries_imports_for_reflection() {
    let set = prost_types::FileDescriptorSet::decode(jumpstarter_proto::FILE_DESCRIPTOR_SET)
        .expect("valid descriptor set");
    let names: Vec<&str> = set.file.iter().map(|file| file.name()).collect();
    for expected in [
        "jumpstarter/v1/common.proto",
        "jumpstarter/v1/kubernetes.proto",
        "jumpstarter/v1/jumpstarter.proto",
        "jumpstarter/v1/router.proto",
        "jumpstarter/client/v1/client.proto",
        "google/protobuf/struct.proto",
        "google/protobuf/timestamp.proto",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
}

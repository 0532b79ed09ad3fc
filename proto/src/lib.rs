//! Protocol definitions of the Jumpstarter service, wire-compatible with
//! jumpstarter 0.9.0.
//!
//! The `.proto` sources live in this crate's `proto/` directory; the build
//! script compiles them with `protox` (no system `protoc`) and generates prost
//! messages plus tonic clients and servers.
//!
//! Map:
//! - [`jumpstarter::v1`]: `ControllerService` (exporter registration, status,
//!   listen/dial and the older lease calls), `ExporterService` (served by an
//!   exporter to its client) and `RouterService` (the byte relay), with the
//!   shared enums and Kubernetes-shaped messages.
//! - [`jumpstarter::client::v1`]: `ClientService`, the resource-oriented API for
//!   exporters and leases.
//! - [`jumpstarter::quic::v1`]: `LeaseCertificateService`, which signs a
//!   party's CSR for one lease (this project's extension for the QUIC data
//!   plane).
//! - [`jumpstarter::peer::v1`]: `PeerService`, the channel between controller
//!   replicas that forwards a Dial to the replica holding the exporter's Listen
//!   stream (this project's extension).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of all of the above and
//!   their imports, for gRPC reflection and compatibility tests.

/// Generated code for the `jumpstarter.*` protobuf packages.
pub mod jumpstarter {
    /// Package `jumpstarter.v1`: controller, exporter and router APIs.
    pub mod v1 {
        tonic::include_proto!("jumpstarter.v1");
    }

    /// Generated code for the `jumpstarter.client.*` packages.
    pub mod client {
        /// Package `jumpstarter.client.v1`: the client-facing API.
        pub mod v1 {
            tonic::include_proto!("jumpstarter.client.v1");
        }
    }

    /// Generated code for the `jumpstarter.quic.*` packages.
    pub mod quic {
        /// Package `jumpstarter.quic.v1`: per-lease certificates for the QUIC
        /// data plane (an extension of this project, not part of 0.9.0).
        pub mod v1 {
            tonic::include_proto!("jumpstarter.quic.v1");
        }
    }

    /// Generated code for the `jumpstarter.peer.*` packages.
    pub mod peer {
        /// Package `jumpstarter.peer.v1`: calls between controller replicas
        /// (an extension of this project, not part of 0.9.0).
        pub mod v1 {
            tonic::include_proto!("jumpstarter.peer.v1");
        }
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of every `.proto` file in this
/// crate plus the files they import, with source info (comments).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/jumpstarter.fds.pb"));

//! Jumpstarter sessions over QUIC, for clients and exporters (and the router's decoder).
//!
//! Client and exporter each hold one QUIC connection to the lease's router, authenticated by
//! their per-lease certificate (mutual TLS). Every session is one bidirectional QUIC stream
//! that starts with a [`Header`] naming the session and then carries the session's raw bytes;
//! FIN is half-close. **Both sides open** their stream for a session (the exporter learns the
//! session id from the controller, as it does for the h2 router), and the router pairs the two
//! streams of the same lease and session id, one from the client-role and one from the
//! exporter-role certificate. So the router never opens streams, and opening a session on an
//! established connection needs no round trip to anyone.
//!
//! Map:
//! - [`header`]: the sans-IO stream header codec ([`Header::encode`], [`Header::decode`]).
//! - [`code`]: the QUIC application error codes used on streams and connections.
//! - [`renewal`]: the sans-IO codec for presenting a renewed lease certificate on a live
//!   connection ([`Connection::renew`] on the peer side, [`read_opening`] on the router's).
//! - [`quic`]: [`QuicPeer::connect`] → [`Connection`], [`Connection::open_session`] →
//!   `(SendStream, RecvStream)`; [`read_header`] for the router side.
//! - [`carrier`]: gRPC over QUIC for controller calls: [`CarrierServer`] serves tonic routes
//!   on QUIC streams, [`carrier::channel`] is a tonic channel over them.
//! - [`socket`]: UDP sockets with buffers sized for bulk transfers, for every endpoint, and
//!   the UDP offloads ([`socket::offloads`]).
//! - [`transport`]: the transport settings of every endpoint ([`QuicTransport`]: windows,
//!   congestion controller, MTU bound) and their flags ([`QuicTransportArgs`]).
//! - [`transport_gauges`]: what an endpoint really runs with, as metrics and a log line.

pub mod carrier;
pub mod code;
pub mod header;
pub mod quic;
pub mod renewal;
pub mod send_window;
pub mod socket;
pub mod transport;
pub mod transport_gauges;

pub use carrier::{CARRIER_ALPN, CarrierConnector, CarrierError, CarrierServer, CarrierStream};
pub use header::{Decoded, Header, HeaderError, MAX_SESSION_ID_LEN, MAX_TOKEN_LEN};
pub use quic::{
    ALPN, ConnectError, Connection, Opening, QuicPeer, RenewError, SessionError, read_header,
    read_opening,
};
pub use transport::{Congestion, QuicTransport, QuicTransportArgs};
pub use transport_gauges::{EndpointRole, TransportGauges};

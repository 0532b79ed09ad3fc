//! The Jumpstarter controller. The lease rules themselves (planner, selectors, request
//! validation, lease commands) live in the pure `jumpstarter_lease` crate; this crate
//! applies them to stored objects and gRPC calls.
//!
//! - [`crd`]: the `jumpstarter.dev/v1alpha1` custom resources and their generated YAML.
//! - [`store`]: the object store abstraction and its Kubernetes backend.
//! - [`settings`]: deployment settings passed down from the binary.
//! - [`flags`]: the flag groups of the controller binaries (defaults from [`settings`]).
//! - [`limits`]: per-caller limits of the services and their flags.
//! - [`jwt`]: JWT authenticators of external issuers (OIDC, service accounts).
//! - [`keys`]: CA, token signing keys and certificates, created at first start.
//! - [`reconcile`]: the loop that applies plans: lease status, exporter status, credentials.
//! - [`leader`]: leader election over a coordination.k8s.io Lease.
//! - [`peer`]: the channel between replicas that forwards a Dial to the Listen's holder.
//! - [`replica`]: the controller replicas and which are alive (one record Lease each).
//! - [`owner`]: the Deployment that owns the objects the controller creates while it runs.
//! - [`auth`]: authentication and authorization of gRPC calls.
//! - [`service`]: the gRPC services (ControllerService, ClientService).
//! - [`server`]: TLS gRPC server, probes and metrics listeners.
//! - [`runtime`]: the wiring of a controller process (metrics, listeners, gRPC server).
//! - [`upstream`]: the 0.9.0 configuration (ConfigMap `jumpstarter-controller` or a file).
//! - [`admin`]: create, get, list and delete clients, exporters and leases; 0.9.0 configs.

pub mod admin;
pub mod auth;
pub mod crd;
pub mod dashboard;
pub mod flags;
pub mod jwt;
pub mod keys;
pub mod leader;
pub mod limits;
pub mod login;
pub mod owner;
pub mod peer;
pub mod reconcile;
pub mod replica;
pub mod runtime;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;
pub mod upstream;

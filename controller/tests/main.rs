//! The controller's integration tests: the gRPC services, the store, the reconcile loop,
//! keys and credentials, against real kube-apiserver and on disk.
//!
//! One test binary for the crate (each file below is a module): one link instead of one
//! per file keeps the build fast and the target directory small. Run one file's tests
//! with `cargo test -p jumpstarter-controller --test integration <file>::`.

mod support;

mod admin_kube;
mod crd_apiserver;
mod crd_compat;
mod crd_yaml;
mod credentials;
mod environment;
mod grpc_api;
mod grpc_lease_certificate;
mod grpc_liveness;
mod grpc_read_cache;
mod grpc_reflection;
mod input_guards;
mod jwt_authenticators;
mod jwt_service_accounts;
mod key_rotation;
mod keys_bootstrap;
mod legacy_key;
mod owner_references;
mod public_port;
mod reconcile_incremental;
mod reconcile_leader;
mod reconcile_loop;
mod replica_peers;
mod store_behaviour;
mod store_embedded;
mod upstream_binary;
mod upstream_config;
mod version;
mod watch_backoff;

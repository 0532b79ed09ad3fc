//! `jumpstarter serve` with the `CONTROLLER_KEY` of a jumpstarter 0.9.0 controller: a
//! token the real Go code minted from that key (`tools/legacy-key`) authenticates a real
//! TLS gRPC call; one from another key does not; the log says where the key came from and
//! never shows it.

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jumpstarter_e2e::{ConfigCredentials, free_port, stdout_of};
use jumpstarter_proto::jumpstarter::client::v1::ListExportersRequest;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_testenv::legacy_key;

use crate::support;

use support::{BIN, ServeProcess};

/// Upper bound of the start; it normally takes well under a second.
const WAIT: Duration = Duration::from_secs(60);
const CONTROLLER_KEY: &str = "5be0c2f4a91d73e86b2a0f19c4d57e3a8b6f01d2e9c47a3b5f8e2d16c0a9b7f4";
const LIFETIME: Duration = Duration::from_secs(8760 * 3600);

/// The `sub` claim of a token (read, not verified).
fn subject(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON");
    claims["sub"].as_str().expect("sub").to_owned()
}

async fn list_exporters(credentials: &ConfigCredentials) -> Result<(), tonic::Status> {
    let channel = credentials
        .tls_endpoint(&credentials.endpoint)
        .expect("TLS endpoint")
        .connect()
        .await
        .expect("connect over TLS");
    let request = credentials.request(
        "Client",
        ListExportersRequest {
            parent: format!("namespaces/{}", credentials.namespace),
            ..Default::default()
        },
    );
    ClientServiceClient::new(channel)
        .list_exporters(request)
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_of_the_0_9_0_controller_key_are_accepted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--data-dir"])
        .arg(&data_dir)
        .args(["--grpc-listen", &grpc, "--no-quic"])
        .args(["--router-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .env_remove("JUMPSTARTER_NAMESPACE")
        .env("CONTROLLER_KEY", CONTROLLER_KEY)
        .stdin(Stdio::null());
    let service = ServeProcess::spawn(command, &data_dir, tmp.path().join("serve.log"), WAIT);

    let config = stdout_of(
        "admin create client",
        &Command::new(BIN)
            .args(["admin", "create", "client", "alice", "--data-dir"])
            .arg(&data_dir)
            .env_remove("JUMPSTARTER_NAMESPACE")
            .env_remove("JUMPSTARTER_KUBECONFIG")
            .env_remove("JUMPSTARTER_KUBERNETES")
            .stdin(Stdio::null())
            .output()
            .expect("run jumpstarter admin"),
    );
    let ours = ConfigCredentials::from_yaml(&serde_norway::from_str(&config).expect("YAML"))
        .expect("client configuration");
    list_exporters(&ours).await.expect("our own token");

    // The same client's token as the 0.9.0 controller with that key issued it.
    let sub = subject(&ours.token);
    let upstream = ConfigCredentials {
        token: legacy_key::mint(CONTROLLER_KEY, &sub, LIFETIME),
        ..ours.clone()
    };
    list_exporters(&upstream)
        .await
        .expect("a 0.9.0 token is accepted");
    let foreign = ConfigCredentials {
        token: legacy_key::mint("another controller key", &sub, LIFETIME),
        ..ours.clone()
    };
    let refused = list_exporters(&foreign).await.expect_err("another key");
    assert!(
        refused.message().contains("signature is invalid"),
        "{refused:?}"
    );

    let logs = service.logs();
    assert!(
        logs.contains("accepting tokens of a 0.9.0 controller key (from CONTROLLER_KEY)"),
        "{logs}"
    );
    assert!(!logs.contains(CONTROLLER_KEY), "the key is never logged");
}

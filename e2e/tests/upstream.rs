//! Drop-in for a jumpstarter 0.9.0 installation (Kubernetes mode, real kube-apiserver).
//!
//! - An installation as a 0.9.0 controller leaves it — the Secret
//!   `jumpstarter-controller-secret`, the ConfigMap `jumpstarter-controller`, a CA kept by
//!   cert-manager, a Client and an Exporter with credential Secrets whose tokens were
//!   signed with the key 0.9.0 derives from `CONTROLLER_KEY` (by the real Go code), and
//!   the configuration files `jmp admin create` wrote — is taken over by this controller
//!   in place: the untouched configurations run `jmp run` and `jmp shell -- j power on`,
//!   and the credential Secrets are kept, not reissued.
//! - A Kubernetes service-account token (TokenRequest) is accepted through a JWT
//!   authenticator for the API server's issuer, by the real `jmp`.
//!
//! Tests run one at a time (each starts Python processes that need the CPU).
#![allow(clippy::await_holding_lock)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use jumpstarter_controller::crd::{Client, ClientSpec, Exporter, ExporterSpec};
use jumpstarter_e2e::{ConfigCredentials, Lab, serial};
use jumpstarter_proto::jumpstarter::client::v1::ListExportersRequest;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_testenv::TestEnv;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use tonic::Code;

const SHELL_TIMEOUT: Duration = Duration::from_secs(180);
const ONLINE_TIMEOUT: Duration = Duration::from_secs(90);
/// The 0.9.0 Helm chart's default `config` key.
const UPSTREAM_CONFIG: &str = r#"authentication:
  internal:
    prefix: "internal:"
  jwt: []
grpc:
  keepalive:
    minTime: 3s
    permitWithoutStream: true
"#;

/// `jmp shell --client-config CONFIG -l board=mock -- j power on`.
async fn shell_power_on(lab: &Lab, config: &Path) -> jumpstarter_e2e::Output {
    let config = config.to_string_lossy().into_owned();
    let args = [
        "shell",
        "--client-config",
        &config,
        "-l",
        "board=mock",
        "--",
        "j",
        "power",
        "on",
    ];
    lab.jmp(&args, SHELL_TIMEOUT).await.expect("jmp shell")
}

/// ListExporters with `credentials` straight over gRPC; without `jumpstarter-name` when
/// their name is empty.
async fn list_exporters(credentials: &ConfigCredentials) -> Result<(), tonic::Status> {
    let channel = credentials
        .tls_endpoint(&credentials.endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut request = credentials.request(
        "Client",
        ListExportersRequest {
            parent: format!("namespaces/{}", credentials.namespace),
            ..Default::default()
        },
    );
    if credentials.name.is_empty() {
        request.metadata_mut().remove("jumpstarter-name");
    }
    ClientServiceClient::new(channel)
        .list_exporters(request)
        .await
        .map(|_| ())
}

fn secret(name: &str, data: &[(&str, &str)], type_: Option<&str>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        type_: type_.map(str::to_owned),
        ..Default::default()
    }
}

/// The credential Secret 0.9.0 keeps for `owner` (`<name>-client` / `<name>-exporter`).
fn credential_secret<K: Resource<DynamicType = ()>>(owner: &K, name: &str, token: &str) -> Secret {
    let mut secret = secret(name, &[("token", token)], Some("Opaque"));
    secret.metadata.owner_references = Some(vec![
        owner
            .controller_owner_ref(&())
            .expect("the owner has a name and uid"),
    ]);
    secret
}

/// A configuration file as 0.9.0 `jmp admin create` writes it (`tls.ca` from the ConfigMap
/// `jumpstarter-service-ca-cert`).
fn write_config(
    path: &Path,
    kind: &str,
    namespace: &str,
    name: &str,
    endpoint: &str,
    ca_pem: &str,
    token: &str,
) {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut text = format!(
        "apiVersion: jumpstarter.dev/v1alpha1\nkind: {kind}\nmetadata:\n  namespace: {namespace}\n  name: {name}\nendpoint: {endpoint}\ntls:\n  ca: {ca}\n  insecure: false\ntoken: {token}\ngrpcOptions: {{}}\n"
    );
    if kind == "ClientConfig" {
        text.push_str("drivers:\n  allow: []\n  unsafe: true\n");
    } else {
        text.push_str("export: {}\n");
    }
    std::fs::write(path, text).expect("write config");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_9_0_installation_is_taken_over_in_place() {
    let _serial = serial();
    let env = TestEnv::shared();
    let mut lab = Lab::kubernetes_unstarted(env, "upstream")
        .await
        .expect("namespace");
    let ns = lab.namespace.clone();
    let kube = lab.kube().await;
    let post = PostParams::default();

    // What the 0.9.0 installer made: the controller key, the router key, the CA that
    // cert-manager keeps, and the controller's ConfigMaps.
    let controller_key = "3c7b1f0e9d2a4b6c8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), &ns);
    secrets
        .create(
            &post,
            &secret(
                "jumpstarter-controller-secret",
                &[("key", controller_key)],
                None,
            ),
        )
        .await
        .expect("controller secret");
    secrets
        .create(
            &post,
            &secret(
                "jumpstarter-router-secret",
                &[("key", "a0b1c2d3e4f5")],
                None,
            ),
        )
        .await
        .expect("router secret");
    let now = time::OffsetDateTime::now_utc();
    let ca = jumpstarter_certs::Ca::generate("jumpstarter-ca", now, time::Duration::days(365))
        .expect("CA");
    let ca_pem = ca.cert_pem().to_owned();
    secrets
        .create(
            &post,
            &secret(
                "jumpstarter-service-ca",
                &[
                    ("tls.crt", &ca_pem),
                    ("tls.key", &ca.key_pem()),
                    ("ca.crt", &ca_pem),
                ],
                Some("kubernetes.io/tls"),
            ),
        )
        .await
        .expect("CA secret");
    let config_maps: Api<ConfigMap> = Api::namespaced(kube.clone(), &ns);
    let config_map = |name: &str, data: &[(&str, &str)]| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..Default::default()
    };
    let router_map = format!("default:\n  endpoint: {}\n", lab.router_endpoint());
    config_maps
        .create(
            &post,
            &config_map(
                "jumpstarter-controller",
                &[("config", UPSTREAM_CONFIG), ("router", &router_map)],
            ),
        )
        .await
        .expect("controller ConfigMap");
    config_maps
        .create(
            &post,
            &config_map("jumpstarter-service-ca-cert", &[("ca.crt", &ca_pem)]),
        )
        .await
        .expect("CA ConfigMap");

    // A Client and an Exporter with the credentials 0.9.0 issued.
    let clients: Api<Client> = Api::namespaced(kube.clone(), &ns);
    let exporters: Api<Exporter> = Api::namespaced(kube.clone(), &ns);
    let alice = clients
        .create(&post, &Client::new("alice", ClientSpec::default()))
        .await
        .expect("client");
    let mut board = Exporter::new("board-1", ExporterSpec::default());
    board.metadata.labels = Some(BTreeMap::from([("board".to_owned(), "mock".to_owned())]));
    let board = exporters.create(&post, &board).await.expect("exporter");
    let lifetime = Duration::from_secs(43_800 * 3600);
    let uid = |meta: &ObjectMeta| meta.uid.clone().expect("uid");
    let alice_token = jumpstarter_testenv::legacy_key::mint(
        controller_key,
        &format!("client:{ns}:alice:{}", uid(&alice.metadata)),
        lifetime,
    );
    let board_token = jumpstarter_testenv::legacy_key::mint(
        controller_key,
        &format!("exporter:{ns}:board-1:{}", uid(&board.metadata)),
        lifetime,
    );
    secrets
        .create(
            &post,
            &credential_secret(&alice, "alice-client", &alice_token),
        )
        .await
        .expect("client secret");
    secrets
        .create(
            &post,
            &credential_secret(&board, "board-1-exporter", &board_token),
        )
        .await
        .expect("exporter secret");
    let endpoint = lab.grpc_endpoint();
    let status = |secret: &str| serde_json::json!({"status": {"credential": {"name": secret}, "endpoint": endpoint}});
    clients
        .patch_status(
            "alice",
            &PatchParams::default(),
            &Patch::Merge(status("alice-client")),
        )
        .await
        .expect("client status");
    exporters
        .patch_status(
            "board-1",
            &PatchParams::default(),
            &Patch::Merge(status("board-1-exporter")),
        )
        .await
        .expect("exporter status");
    let client_config = lab.path("alice.yaml");
    let exporter_config = lab.path("board-1.yaml");
    write_config(
        &client_config,
        "ClientConfig",
        &ns,
        "alice",
        &endpoint,
        &ca_pem,
        &alice_token,
    );
    write_config(
        &exporter_config,
        "ExporterConfig",
        &ns,
        "board-1",
        &endpoint,
        &ca_pem,
        &board_token,
    );
    Lab::add_drivers(&exporter_config).expect("drivers");
    let untouched = std::fs::read(&client_config).expect("client config");

    // This controller and router take over, on the same objects.
    lab.serve_args = vec!["--ca-secret".into(), "jumpstarter-service-ca".into()];
    lab.router_cert_args = lab.serve_args.clone();
    lab.start_controller().await.expect("controller");
    lab.start_router().await.expect("router");

    lab.run_exporter("board-1", &exporter_config)
        .expect("jmp run");
    lab.wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("board-1 online with its 0.9.0 token: {e}\n{}", lab.logs()));
    let out = shell_power_on(&lab, &client_config).await;
    assert!(
        out.ok(),
        "jmp shell with the 0.9.0 client config: {out}\n{}",
        lab.logs()
    );
    assert_eq!(
        std::fs::read(&client_config).expect("client config"),
        untouched,
        "the configuration was not rewritten"
    );
    // The credentials 0.9.0 issued are kept, not reissued.
    for (name, token) in [
        ("alice-client", &alice_token),
        ("board-1-exporter", &board_token),
    ] {
        let stored = secrets.get(name).await.expect("credential secret");
        let data = stored.data.unwrap_or_default();
        assert_eq!(
            data.get("token").map(|t| t.0.as_slice()),
            Some(token.as_bytes()),
            "{name} keeps its 0.9.0 token"
        );
    }
    // A token signed with another key is still refused.
    let forged = jumpstarter_testenv::legacy_key::mint(
        "another-key",
        &format!("client:{ns}:alice:{}", uid(&alice.metadata)),
        lifetime,
    );
    let mut credentials = ConfigCredentials::read(&client_config).expect("config");
    credentials.token = forged;
    let status = list_exporters(&credentials)
        .await
        .expect_err("a token of another key");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
}

/// A service account's token from the API server (TokenRequest) is accepted through a JWT
/// authenticator for the cluster issuer, as 0.9.0's Helm values show; the Client names the
/// service account in `spec.username`.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_account_token_is_accepted_through_the_cluster_issuer() {
    let _serial = serial();
    let env = TestEnv::shared();
    let issuer = format!("https://127.0.0.1:{}", env.api_port);
    let config_dir = tempfile::tempdir().expect("dir");
    let config_path = config_dir.path().join("config.yaml");
    std::fs::write(
        &config_path,
        format!(
            r#"authentication:
  jwt:
    - issuer:
        url: {issuer}
        audiences: [jumpstarter]
        certificateAuthority: {ca}
      claimMappings:
        username:
          claim: sub
          prefix: "kubernetes:"
"#,
            ca = env.dir.join("pki/ca.crt").display()
        ),
    )
    .expect("config");
    let admin = env.admin_client().await;
    // The issuer's discovery document and keys, readable without credentials (the
    // documented setup for external verifiers of service-account tokens).
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some("jumpstarter-e2e-service-account-issuer-discovery".to_owned()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: "system:service-account-issuer-discovery".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".to_owned(),
            name: "system:unauthenticated".to_owned(),
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            ..Default::default()
        }]),
    };
    match bindings.create(&PostParams::default(), &binding).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("discovery binding: {e}"),
    }
    let config_arg = config_path.to_string_lossy().into_owned();
    let mut lab = Lab::start_kubernetes_on(env, "sa-token", &["--config", &config_arg])
        .await
        .expect("lab");
    lab.start_exporter("board-1", &["board=mock"])
        .await
        .expect("exporter");
    lab.wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .expect("online");
    let ns = lab.namespace.clone();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("ci".to_owned()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("service account");
    let username = format!("kubernetes:system:serviceaccount:{ns}:ci");
    let kubeconfig = lab.kubeconfig.to_string_lossy().into_owned();
    let admin_out = lab.path("ci.admin.yaml").to_string_lossy().into_owned();
    let out = lab
        .jmp(
            &[
                "admin",
                "create",
                "client",
                "ci",
                "-n",
                &ns,
                "--kubeconfig",
                &kubeconfig,
                "--oidc-username",
                &username,
                "--unsafe",
                "--nointeractive",
                "--out",
                &admin_out,
            ],
            Duration::from_secs(60),
        )
        .await
        .expect("jmp admin create client");
    assert!(out.ok(), "{out}");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["jumpstarter".to_owned()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = accounts
        .create_token_request("ci", &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("token status")
        .token;

    // The real `jmp` with a configuration holding the service account's token.
    let text = std::fs::read_to_string(&admin_out).expect("config");
    let mut config: serde_norway::Value = serde_norway::from_str(&text).expect("yaml");
    config["token"] = serde_norway::Value::String(token.clone());
    let sa_config = lab.path("ci.sa.yaml");
    std::fs::write(&sa_config, serde_norway::to_string(&config).expect("yaml")).expect("write");
    let sa_arg = sa_config.to_string_lossy().into_owned();
    let out = lab
        .jmp(
            &["get", "exporters", "--client-config", &sa_arg],
            Duration::from_secs(60),
        )
        .await
        .expect("jmp get exporters");
    assert!(
        out.ok() && out.stdout.contains("board-1"),
        "{out}\n{}",
        lab.logs()
    );
    let out = shell_power_on(&lab, &sa_config).await;
    assert!(
        out.ok(),
        "jmp shell with a service-account token: {out}\n{}",
        lab.logs()
    );

    // A service account names its Client: without `jumpstarter-name` it is refused.
    let mut credentials = ConfigCredentials::read(&sa_config).expect("config");
    credentials.name = String::new();
    let status = list_exporters(&credentials).await.expect_err("no name");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("resource name required"),
        "{status:?}"
    );
}

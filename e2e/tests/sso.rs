//! Single sign-on with a real identity provider (Dex, on loopback with TLS) and the real
//! 0.9.0 `jmp login`, in both modes: the service reads the 0.9.0 configuration
//! (`authentication.jwt`, `provisioning`) from `--config`, serves the login service, and
//! accepts the provider's access tokens for the Client whose `spec.username` matches.
//!
//! - `jmp login --endpoint … --username … --password …` then `jmp get exporters` and
//!   `jmp shell -- j power on`; the simplified `jmp login client@host` (through
//!   `/v1/auth/config`);
//! - an expired access token: `jmp` sees "token is expired", refreshes it with its refresh
//!   token, and the next command works;
//! - refusals with 0.9.0's codes: a token of an unconfigured issuer, of another audience,
//!   with a bad signature, and of an unknown user (provisioning off);
//! - provisioning on: a new user's first login creates its Client; the second reuses it.
//!
//! Tests run one at a time (each starts Python processes that need the CPU).
#![allow(clippy::await_holding_lock)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jumpstarter_e2e::{ConfigCredentials, Lab, Mode, Output, serial};
use jumpstarter_proto::jumpstarter::client::v1::ListExportersRequest;
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_testenv::oidc::{Dex, DexOptions, DexUser};
use tonic::Code;

const SHELL_TIMEOUT: Duration = Duration::from_secs(180);
const ONLINE_TIMEOUT: Duration = Duration::from_secs(90);
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The username claim and prefix the tests configure: Dex's `preferred_username` with
/// prefix `dex:` (user `alice` is `dex:alice`, and acts as the Client `alice`).
const PREFIX: &str = "dex:";

/// A lab whose service trusts `dex` and serves the login service, with exporter
/// `board-1` (`board=mock`) online, and the CA bundle `jmp` needs (the lab's CA for the
/// controller and the login service, Dex's CA for the provider).
struct SsoLab {
    lab: Lab,
    /// PEM bundle: the lab's CA and Dex's CA.
    bundle: PathBuf,
    login_port: u16,
    /// An internal client's credentials (the CA and endpoint of raw calls).
    probe: ConfigCredentials,
    _config_dir: tempfile::TempDir,
}

/// The 0.9.0 `config` document of a service trusting `dex`.
fn service_config(dex: &Dex, audience: &str, provisioning: bool) -> String {
    format!(
        r#"authentication:
  internal:
    prefix: "internal:"
  jwt:
    - issuer:
        url: {issuer}
        audiences: [{audience}]
        certificateAuthority: {ca}
      claimMappings:
        username:
          claim: preferred_username
          prefix: "{PREFIX}"
provisioning:
  enabled: {provisioning}
"#,
        issuer = dex.issuer(),
        ca = dex.ca_file().display(),
    )
}

async fn start_sso_lab(mode: Mode, prefix: &str, config: &str) -> SsoLab {
    let config_dir = tempfile::tempdir().expect("config dir");
    let config_path = config_dir.path().join("config.yaml");
    std::fs::write(&config_path, config).expect("write config");
    let login_port = jumpstarter_e2e::free_port();
    let config_arg = config_path.to_string_lossy().into_owned();
    let login_arg = format!("127.0.0.1:{login_port}");
    let mut lab = Lab::start_with(
        mode,
        prefix,
        &["--config", &config_arg, "--login-listen", &login_arg],
    )
    .await
    .expect("start lab");
    lab.start_exporter("board-1", &["board=mock"])
        .await
        .expect("exporter");
    lab.wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .expect("online");
    let probe_path = lab.create_client("probe").await.expect("client probe");
    let probe = ConfigCredentials::read(&probe_path).expect("probe config");
    let bundle = config_dir.path().join("bundle.pem");
    SsoLab {
        lab,
        bundle,
        login_port,
        probe,
        _config_dir: config_dir,
    }
}

impl SsoLab {
    /// Writes the CA bundle of the lab and `dex`.
    fn trust(&self, dex: &Dex) {
        let mut pem = String::from_utf8(self.probe.ca_pem.clone()).expect("PEM");
        pem.push('\n');
        pem.push_str(&std::fs::read_to_string(dex.ca_file()).expect("Dex CA"));
        std::fs::write(&self.bundle, pem).expect("write bundle");
    }

    /// `jmp ARGS` trusting the bundle for the provider, the login service (Python's
    /// `ssl`) and the controller (gRPC's default roots).
    async fn jmp(&self, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = self.lab.jmp_command(args);
        cmd.env("SSL_CERT_FILE", &self.bundle)
            .env("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", &self.bundle)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn jmp");
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`jmp {}` did not finish in {timeout:?}", args.join(" ")))
            .expect("jmp output");
        Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Creates the Client `name` that the provider's user `user` acts as.
    async fn create_sso_client(&self, name: &str, user: &str) {
        self.create_sso_object("client", name, user, &[]).await;
    }

    /// Creates the `kind` (`client` or `exporter`) `name` with `labels` that the provider's
    /// user `user` acts as (`--oidc-username dex:<user>`).
    async fn create_sso_object(&self, kind: &str, name: &str, user: &str, labels: &[&str]) {
        let username = format!("{PREFIX}{user}");
        let out_path = self.lab.path(&format!("{name}.admin.yaml"));
        let out = out_path.to_string_lossy().into_owned();
        let mut args = vec!["create", kind, name, "--oidc-username", &username];
        for label in labels {
            args.extend(["-l", label]);
        }
        match self.lab.mode {
            Mode::Standalone => {
                args.extend(["--out", &out]);
                self.lab
                    .admin(&args)
                    .await
                    .expect("jumpstarter admin create");
            }
            Mode::Kubernetes => {
                let kubeconfig = self.lab.kubeconfig.to_string_lossy().into_owned();
                let mut jmp_args = vec!["admin"];
                jmp_args.extend(args);
                jmp_args.extend([
                    "-n",
                    &self.lab.namespace,
                    "--kubeconfig",
                    &kubeconfig,
                    "--nointeractive",
                    "--out",
                    &out,
                ]);
                if kind == "client" {
                    jmp_args.push("--unsafe");
                }
                let out = self
                    .lab
                    .jmp(&jmp_args, Duration::from_secs(60))
                    .await
                    .expect("jmp admin create");
                assert!(out.ok(), "jmp admin create {kind}: {out}");
            }
        }
    }

    /// `jmp login --client ALIAS --endpoint … --username … --password …` acting as Client
    /// `name`; the output, and the path of the configuration it writes.
    async fn login_with_endpoint(
        &self,
        dex: &Dex,
        alias: &str,
        name: &str,
        user: &str,
        password: &str,
    ) -> (Output, PathBuf) {
        let endpoint = self.lab.grpc_endpoint();
        let out = self
            .jmp(
                &[
                    "login",
                    "--client",
                    alias,
                    "--endpoint",
                    &endpoint,
                    "--namespace",
                    &self.lab.namespace,
                    "--name",
                    name,
                    "--issuer",
                    dex.issuer(),
                    "--username",
                    user,
                    "--password",
                    password,
                    "--unsafe",
                    "--nointeractive",
                ],
                LOGIN_TIMEOUT,
            )
            .await;
        (out, self.client_config(alias))
    }

    /// Where `jmp` keeps the client configuration `alias` of this lab's HOME.
    fn client_config(&self, alias: &str) -> PathBuf {
        self.lab
            .path("home")
            .join("jumpstarter/clients")
            .join(format!("{alias}.yaml"))
    }

    /// `jmp get exporters --client-config CONFIG` succeeds and lists `board-1`.
    async fn assert_lists_board(&self, config: &str) {
        let args = ["get", "exporters", "--client-config", config];
        let out = self.jmp(&args, Duration::from_secs(60)).await;
        assert!(
            out.ok() && out.stdout.contains("board-1"),
            "{out}\n{}",
            self.lab.logs()
        );
    }

    async fn shell_power_on(&self, client_args: &[&str]) -> Output {
        let mut args = vec!["shell"];
        args.extend_from_slice(client_args);
        args.extend(["-l", "board=mock", "--", "j", "power", "on"]);
        self.jmp(&args, SHELL_TIMEOUT).await
    }

    /// ListExporters as Client `name` with `token` (no `jumpstarter-name` when `name` is
    /// empty), straight over gRPC.
    async fn list_exporters_as(&self, token: &str, name: &str) -> Result<(), tonic::Status> {
        let credentials = ConfigCredentials {
            token: token.to_owned(),
            name: name.to_owned(),
            ..self.probe.clone()
        };
        let channel = credentials
            .tls_endpoint(&credentials.endpoint)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut request = credentials.request(
            "Client",
            ListExportersRequest {
                parent: format!("namespaces/{}", self.lab.namespace),
                ..Default::default()
            },
        );
        if name.is_empty() {
            request.metadata_mut().remove("jumpstarter-name");
        }
        ClientServiceClient::new(channel)
            .list_exporters(request)
            .await
            .map(|_| ())
    }
}

/// Sets `tls.ca` of the configuration at `path` to `ca_pem` (what `jmp admin` writes).
fn trust_in_config(path: &Path, ca_pem: &[u8]) {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).expect("read config");
    let mut value: serde_norway::Value = serde_norway::from_str(&text).expect("yaml");
    value["tls"]["ca"] =
        serde_norway::Value::String(base64::engine::general_purpose::STANDARD.encode(ca_pem));
    value["tls"]["insecure"] = serde_norway::Value::Bool(false);
    std::fs::write(path, serde_norway::to_string(&value).expect("yaml")).expect("write config");
}

fn yaml_field(path: &Path, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_norway::Value = serde_norway::from_str(&text).ok()?;
    value[field].as_str().map(str::to_owned)
}

/// The whole single sign-on story of one mode with a provider whose tokens live an hour.
async fn login_shell_and_refusals(mode: Mode) {
    let _serial = serial();
    let dex = Dex::start(DexOptions {
        users: ["alice", "bob", "board-sso"].map(DexUser::new).to_vec(),
        ..DexOptions::default()
    })
    .await
    .expect("start Dex");
    let mut sso = start_sso_lab(mode, "sso", &service_config(&dex, "jumpstarter-cli", false)).await;
    sso.trust(&dex);
    let alice = dex.user("alice");
    sso.create_sso_client("alice", "alice").await;

    // jmp login with the endpoint, then jmp get exporters and jmp shell.
    let (out, config) = sso
        .login_with_endpoint(&dex, "alice-sso", "alice", &alice.email, &alice.password)
        .await;
    assert!(out.ok(), "jmp login: {out}\n{}", sso.lab.logs());
    let token = yaml_field(&config, "token").expect("token saved");
    assert!(token.split('.').count() == 3, "a JWT: {token:.20}");
    let config_arg = config.to_string_lossy().into_owned();
    sso.assert_lists_board(&config_arg).await;
    let out = sso.shell_power_on(&["--client-config", &config_arg]).await;
    assert!(out.ok(), "jmp shell: {out}\n{}", sso.lab.logs());

    // The simplified form: `jmp login alice@host` reads /v1/auth/config (TLS, the lab's CA).
    let target = format!("alice@127.0.0.1:{}", sso.login_port);
    let out = sso
        .jmp(
            &[
                "login",
                &target,
                "--username",
                &alice.email,
                "--password",
                &alice.password,
                "--unsafe",
                "--nointeractive",
            ],
            LOGIN_TIMEOUT,
        )
        .await;
    assert!(out.ok(), "jmp login alice@host: {out}\n{}", sso.lab.logs());
    let out = sso.shell_power_on(&["--client", "alice"]).await;
    assert!(
        out.ok(),
        "jmp shell --client alice: {out}\n{}",
        sso.lab.logs()
    );

    // An exporter logs in with the provider (`jmp login --exporter-config`), runs with
    // that token, and serves a lease.
    sso.create_sso_object("exporter", "board-sso", "board-sso", &["board=sso"])
        .await;
    let exporter_config = sso.lab.path("board-sso.sso.yaml");
    let board = dex.user("board-sso");
    let exporter_arg = exporter_config.to_string_lossy().into_owned();
    let endpoint = sso.lab.grpc_endpoint();
    let out = sso
        .jmp(
            &[
                "login",
                "--exporter-config",
                &exporter_arg,
                "--endpoint",
                &endpoint,
                "--namespace",
                &sso.lab.namespace,
                "--name",
                "board-sso",
                "--issuer",
                dex.issuer(),
                "--username",
                &board.email,
                "--password",
                &board.password,
                "--nointeractive",
            ],
            LOGIN_TIMEOUT,
        )
        .await;
    assert!(out.ok(), "jmp login --exporter-config: {out}");
    trust_in_config(&exporter_config, &sso.probe.ca_pem);
    Lab::add_drivers(&exporter_config).expect("drivers");
    sso.lab
        .run_exporter("board-sso", &exporter_config)
        .expect("jmp run");
    sso.lab
        .wait_exporter_condition("board-sso", "Online", "True", ONLINE_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("board-sso online: {e}\n{}", sso.lab.logs()));
    let out = sso
        .jmp(
            &[
                "shell",
                "--client-config",
                &config_arg,
                "-l",
                "board=sso",
                "--",
                "j",
                "power",
                "on",
            ],
            SHELL_TIMEOUT,
        )
        .await;
    assert!(
        out.ok(),
        "jmp shell on board-sso: {out}\n{}",
        sso.lab.logs()
    );

    // Refusals, with 0.9.0's codes.
    // A token of a provider the service does not trust: "failed to authenticate token".
    let stranger = Dex::start(DexOptions::default()).await.expect("second Dex");
    let foreign = stranger.login("alice").await.expect("grant");
    let status = sso
        .list_exporters_as(&foreign.access_token, "alice")
        .await
        .expect_err("unconfigured issuer");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(
        status.message().contains("failed to authenticate token"),
        "{status:?}"
    );
    // A bad signature: the last characters of the signature changed.
    let good = dex.login("alice").await.expect("grant");
    let forged = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (signed, signature) = good.access_token.rsplit_once('.').expect("a JWS");
        let mut signature = engine.decode(signature).expect("base64url signature");
        signature[0] ^= 0x01;
        format!("{signed}.{}", engine.encode(signature))
    };
    let status = sso
        .list_exporters_as(&forged, "alice")
        .await
        .expect_err("bad signature");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(status.message().contains("verify"), "{status:?}");
    // The good token works through the same path (the refusals are not an artefact).
    sso.list_exporters_as(&good.access_token, "alice")
        .await
        .expect("alice's own token");
    sso.list_exporters_as(&good.access_token, "")
        .await
        .expect("the name derives from the username");
    // Another object's name than the username's: refused.
    let status = sso
        .list_exporters_as(&good.access_token, "probe")
        .await
        .expect_err("name mismatch");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // A user without a Client (provisioning off).
    let bob_token = dex.login("bob").await.expect("grant");
    let status = sso
        .list_exporters_as(&bob_token.access_token, "")
        .await
        .expect_err("unknown user");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("not found"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_shell_and_refusals_in_kubernetes_mode() {
    login_shell_and_refusals(Mode::Kubernetes).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn login_shell_and_refusals_in_standalone_mode() {
    login_shell_and_refusals(Mode::Standalone).await;
}

/// A token of the right issuer for another audience is refused with the audience named.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_for_another_audience_is_refused() {
    let _serial = serial();
    let dex = Dex::start(DexOptions::default()).await.expect("start Dex");
    let sso = start_sso_lab(
        Mode::Standalone,
        "sso-aud",
        &service_config(&dex, "another-audience", false),
    )
    .await;
    sso.trust(&dex);
    sso.create_sso_client("alice", "alice").await;
    let token = dex.login("alice").await.expect("grant");
    let status = sso
        .list_exporters_as(&token.access_token, "alice")
        .await
        .expect_err("wrong audience");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(status.message().contains("audience"), "{status:?}");
}

/// An access token that expires: `jmp` gets "token is expired", refreshes the token with
/// its refresh token, and the next command works with the new one.
async fn expired_token_is_refreshed(mode: Mode) {
    let _serial = serial();
    let ttl = Duration::from_secs(20);
    let dex = Dex::start(DexOptions {
        token_ttl: ttl,
        ..DexOptions::default()
    })
    .await
    .expect("start Dex");
    let sso = start_sso_lab(
        mode,
        "sso-exp",
        &service_config(&dex, "jumpstarter-cli", false),
    )
    .await;
    sso.trust(&dex);
    let alice = dex.user("alice");
    sso.create_sso_client("alice", "alice").await;
    let (out, config) = sso
        .login_with_endpoint(&dex, "alice-sso", "alice", &alice.email, &alice.password)
        .await;
    assert!(out.ok(), "jmp login: {out}");
    let first = yaml_field(&config, "token").expect("token");
    assert!(
        yaml_field(&config, "refresh_token").is_some(),
        "a refresh token is saved"
    );
    let config_arg = config.to_string_lossy().into_owned();
    let get = ["get", "exporters", "--client-config", config_arg.as_str()];
    let out = sso.jmp(&get, Duration::from_secs(60)).await;
    assert!(out.ok(), "{out}");

    // Wait until the controller says the token is expired (bounded: the TTL plus a margin).
    let deadline = Instant::now() + ttl + Duration::from_secs(30);
    let status = loop {
        match sso.list_exporters_as(&first, "alice").await {
            Err(status) => break status,
            Ok(()) if Instant::now() < deadline => tokio::time::sleep(Duration::from_secs(1)).await,
            Ok(()) => panic!("the token was still accepted {ttl:?} after login"),
        }
    };
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(status.message().contains("token is expired"), "{status:?}");

    // `jmp get` sees it, refreshes, and asks to try again; then it works.
    let out = sso.jmp(&get, Duration::from_secs(60)).await;
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("re-authentication"), "{out}");
    let second = yaml_field(&config, "token").expect("token");
    assert_ne!(first, second, "the token was refreshed");
    let out = sso.jmp(&get, Duration::from_secs(60)).await;
    assert!(
        out.ok() && out.stdout.contains("board-1"),
        "{out}\n{}",
        sso.lab.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_token_is_refreshed_in_kubernetes_mode() {
    expired_token_is_refreshed(Mode::Kubernetes).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_token_is_refreshed_in_standalone_mode() {
    expired_token_is_refreshed(Mode::Standalone).await;
}

/// Provisioning on: the first login of an unknown user creates its Client (with its
/// username); the second reuses it.
async fn provisioning_creates_the_client_once(mode: Mode) {
    let _serial = serial();
    let dex = Dex::start(DexOptions::default()).await.expect("start Dex");
    let sso = start_sso_lab(
        mode,
        "sso-prov",
        &service_config(&dex, "jumpstarter-cli", true),
    )
    .await;
    sso.trust(&dex);
    let bob = dex.user("bob");
    let (out, config) = sso
        .login_with_endpoint(&dex, "bob-sso", "bob", &bob.email, &bob.password)
        .await;
    assert!(out.ok(), "jmp login: {out}");
    let config_arg = config.to_string_lossy().into_owned();
    sso.assert_lists_board(&config_arg).await;
    let uid = client_uid(&sso.lab, "bob").await;
    let username = client_username(&sso.lab, "bob").await;
    assert_eq!(username.as_deref(), Some("dex:bob"));

    // Log in again and lease: the same Client.
    let (out, _) = sso
        .login_with_endpoint(&dex, "bob-sso", "bob", &bob.email, &bob.password)
        .await;
    assert!(out.ok(), "second jmp login: {out}");
    let out = sso.shell_power_on(&["--client-config", &config_arg]).await;
    assert!(out.ok(), "jmp shell: {out}\n{}", sso.lab.logs());
    assert_eq!(
        client_uid(&sso.lab, "bob").await,
        uid,
        "the Client was reused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_creates_the_client_once_in_kubernetes_mode() {
    provisioning_creates_the_client_once(Mode::Kubernetes).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_creates_the_client_once_in_standalone_mode() {
    provisioning_creates_the_client_once(Mode::Standalone).await;
}

/// The stored Client `name` as YAML (`jumpstarter admin get` / the API server).
async fn client_yaml(lab: &Lab, name: &str) -> serde_norway::Value {
    let text = match lab.mode {
        Mode::Standalone => lab
            .admin(&["get", "client", name, "-o", "yaml"])
            .await
            .expect("jumpstarter admin get client"),
        Mode::Kubernetes => {
            let api: kube::Api<jumpstarter_controller::crd::Client> =
                kube::Api::namespaced(lab.kube().await, &lab.namespace);
            let client = api.get(name).await.expect("get client");
            serde_norway::to_string(&client).expect("yaml")
        }
    };
    let value: serde_norway::Value = serde_norway::from_str(&text).expect("yaml");
    // `admin get -o yaml` prints a list.
    match value {
        serde_norway::Value::Sequence(mut items) if !items.is_empty() => items.remove(0),
        other => other,
    }
}

async fn client_uid(lab: &Lab, name: &str) -> String {
    let client = client_yaml(lab, name).await;
    client["metadata"]["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("client {name} has a uid: {client:?}"))
        .to_owned()
}

async fn client_username(lab: &Lab, name: &str) -> Option<String> {
    client_yaml(lab, name).await["spec"]["username"]
        .as_str()
        .map(str::to_owned)
}

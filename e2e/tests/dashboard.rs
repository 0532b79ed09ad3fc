//! The lab dashboard in a real browser (Debian's headless Chromium, driven through its
//! WebDriver), in both modes, with exporters and leases made by the real 0.9.0 tools: the
//! page refuses access without the credential, shows the exporters and leases, follows a
//! lease being created and released without a reload, and filters by label selector. With
//! single sign-on (a real Dex), users log in through the provider's own login form; a user
//! outside the lab's group is refused, only admins (by name or by group) are offered the
//! actions, and an action is logged under the user's name.
//!
//! Screenshots are saved under `target/dashboard-screenshots/` (the README's comes from
//! there, copied to `docs/`).
#![allow(clippy::await_holding_lock)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use jumpstarter_e2e::lease::is_ready;
use jumpstarter_e2e::{Lab, Mode, free_port, serial};
use jumpstarter_testenv::oidc::{Dex, DexOptions, DexUser, DexWebClient};

/// One browser at a time: Chromium needs the CPU.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(90);
const LEASE_TIMEOUT: Duration = Duration::from_secs(45);
/// A change must show without a reload within this (the page promises 2 s; the bound
/// leaves room for a loaded machine).
const LIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// `chromedriver` on a free port, ended when dropped.
struct Driver {
    child: tokio::process::Child,
    port: u16,
}

impl Driver {
    async fn start(log: PathBuf) -> Driver {
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let port = free_port();
        let log = std::fs::File::create(log).expect("driver log");
        // Its own process group, which the browsers it starts join: dropping the driver
        // ends them too, also when a failed assertion leaves a session open.
        let child = tokio::process::Command::new(&binary)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {binary} (Debian packages chromium and chromium-driver; \
                     the test command installs them): {e}"
                )
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "{binary} did not listen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, port }
    }

    /// A headless Chromium session.
    async fn browser(&self) -> Client {
        self.browser_with(false).await
    }

    /// A headless Chromium session; `accept_insecure_certs` for the test identity
    /// provider, whose certificate comes from a CA made for the test (the controller checks
    /// it against that CA; the browser only has to reach its login form).
    async fn browser_with(&self, accept_insecure_certs: bool) -> Client {
        let mut caps = serde_json::Map::new();
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": binary,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,900",
                ],
            }),
        );
        caps.insert(
            "acceptInsecureCerts".to_owned(),
            serde_json::Value::Bool(accept_insecure_certs),
        );
        // The driver speaks plain HTTP on loopback: no TLS connector.
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.start_kill();
    }
}

/// Text of the element `css`, or "" while it is absent.
async fn text(browser: &Client, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits (without reloading) until the text of `css` satisfies `check`.
async fn wait_text(
    browser: &Client,
    css: &str,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + LIVE_TIMEOUT;
    loop {
        let seen = text(browser, css).await;
        if check(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {css} still shows\n{seen}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Types each `(field, text)` into its field, then clicks `button`.
async fn fill_in(browser: &Client, fields: &[(&str, &str)], button: &str) {
    for (field, text) in fields {
        browser
            .find(Locator::Css(field))
            .await
            .unwrap_or_else(|e| panic!("field {field}: {e}"))
            .send_keys(text)
            .await
            .expect("type");
    }
    browser
        .find(Locator::Css(button))
        .await
        .unwrap_or_else(|e| panic!("button {button}: {e}"))
        .click()
        .await
        .expect("submit");
}

/// Types `token` into the login form and submits it.
async fn log_in(browser: &Client, token: &str) {
    fill_in(browser, &[("#token", token)], "#login").await;
}

/// The text of the table row of `name` in table `table`.
async fn row(browser: &Client, table: &str, name: &str) -> String {
    text(browser, &format!("#{table} tr[data-name=\"{name}\"]")).await
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(name), png).expect("save screenshot");
}

async fn the_dashboard_shows_the_lab_live_behind_its_credential(mode: Mode) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Kubernetes mode: the controller reads the credential from a file given to it.
    let secrets = tempfile::tempdir().expect("tempdir");
    let token_file = secrets.path().join("dashboard-token");
    std::fs::write(&token_file, "k8s-dashboard-credential-0123456789\n").expect("token");
    let token_arg = token_file.to_string_lossy().into_owned();
    let args: Vec<&str> = match mode {
        Mode::Standalone => vec!["--dashboard-listen", &listen],
        Mode::Kubernetes => vec![
            "--dashboard-listen",
            &listen,
            "--dashboard-token-file",
            &token_arg,
        ],
    };
    let mut lab = Lab::start_with(mode, "e2e-dashboard", &args)
        .await
        .expect("start lab");
    let token = match mode {
        Mode::Standalone => std::fs::read_to_string(lab.data_dir().join("dashboard-token"))
            .expect("the dashboard token jumpstarter serve made"),
        Mode::Kubernetes => std::fs::read_to_string(&token_file).expect("token"),
    };
    let token = token.trim().to_owned();
    lab.start_exporter("board-1", &["board=mock"])
        .await
        .expect("exporter");
    lab.start_exporter("board-2", &["board=other"])
        .await
        .expect("exporter");
    let alice = lab.create_client("alice").await.expect("client");
    let alice = alice.to_string_lossy().into_owned();
    for board in ["board-1", "board-2"] {
        lab.wait_exporter_condition(board, "Online", "True", ONLINE_TIMEOUT)
            .await
            .expect("online");
    }

    let driver = Driver::start(lab.path("chromedriver.log")).await;
    let browser = driver.browser().await;
    let url = format!("http://{listen}/");
    let mode_name = match mode {
        Mode::Standalone => "standalone",
        Mode::Kubernetes => "kubernetes",
    };

    // Without the credential: the login page, and no lab data.
    browser.goto(&url).await.expect("open the dashboard");
    let body = text(&browser, "body").await;
    assert!(body.contains("Dashboard token"), "{body}");
    assert!(!body.contains("board-1"), "{body}");
    log_in(&browser, "not-the-credential").await;
    wait_text(&browser, "#login-error", "the refusal", |t| {
        t.contains("not the dashboard credential")
    })
    .await;
    assert!(!text(&browser, "body").await.contains("board-1"));

    // With it: the exporters, both free.
    log_in(&browser, &token).await;
    wait_text(&browser, "#count-free", "both exporters free", |t| {
        t.starts_with("2 free")
    })
    .await;
    assert!(
        row(&browser, "exporters", "board-1")
            .await
            .contains("board=mock")
    );
    assert!(row(&browser, "clients", "alice").await.contains("alice"));
    // The script has connected to the change stream.
    wait_text(&browser, "#live-status", "the live connection", |t| {
        t.starts_with("Live")
    })
    .await;

    // A lease made with 0.9.0's jmp shows up without a reload.
    let lease = lab
        .create_lease(&alice, &["-l", "board=mock", "--duration", "10m"])
        .await;
    lab.wait_lease(&lease, "Ready", LEASE_TIMEOUT, is_ready)
        .await;
    let leased = wait_text(
        &browser,
        "#exporters tr[data-name=\"board-1\"]",
        "board-1 leased",
        |t| t.contains("leased") && t.contains("alice"),
    )
    .await;
    assert!(leased.contains(&lease), "{leased}");
    let lease_row = row(&browser, "leases", &lease).await;
    assert!(
        lease_row.contains("active") && lease_row.contains("board-1"),
        "{lease_row}"
    );
    assert!(
        text(&browser, "#count-leased")
            .await
            .starts_with("1 leased")
    );
    // A second lease for the same boards waits: it shows in the queue, with its position.
    let queued = lab
        .create_lease(&alice, &["-l", "board=mock", "--duration", "5m"])
        .await;
    let waiting = wait_text(
        &browser,
        &format!("#leases tr[data-name=\"{queued}\"]"),
        "the waiting lease",
        |t| t.contains("waiting") && t.contains("position 1 in the queue"),
    )
    .await;
    assert!(waiting.contains("alice"), "{waiting}");
    wait_text(&browser, "#count-waiting", "one lease waiting", |t| {
        t.starts_with("1 waiting")
    })
    .await;
    let board = row(&browser, "exporters", "board-1").await;
    assert!(
        board.trim_end().ends_with('1'),
        "board-1 has one lease waiting: {board}"
    );
    screenshot(&browser, &format!("{mode_name}-leased.png")).await;
    lab.delete_lease(&alice, &queued).await;

    // Filtering by selector (the same syntax as jmp) keeps the other board only.
    fill_in(
        &browser,
        &[("#selector", "board in (other)")],
        "#filter button",
    )
    .await;
    wait_text(&browser, "#exporters tbody", "the filter", |t| {
        t.contains("board-2") && !t.contains("board-1")
    })
    .await;
    screenshot(&browser, &format!("{mode_name}-filtered.png")).await;

    // Releasing the lease frees board-1, again without a reload.
    browser.goto(&url).await.expect("unfiltered page");
    lab.delete_lease(&alice, &lease).await;
    wait_text(
        &browser,
        "#exporters tr[data-name=\"board-1\"]",
        "board-1 free again",
        |t| t.contains("free"),
    )
    .await;
    wait_text(&browser, "#leases tbody", "the lease gone", |t| {
        !t.contains(&lease)
    })
    .await;

    // Logging out ends access.
    browser
        .goto(&format!("{url}logout"))
        .await
        .expect("log out");
    let body = text(&browser, "body").await;
    assert!(
        body.contains("Dashboard token") && !body.contains("board-1"),
        "{body}"
    );
    browser.close().await.expect("close the browser");
}

jumpstarter_e2e::in_both_modes!(the_dashboard_shows_the_lab_live_behind_its_credential);

/// The resolved URL in attribute `property` (`href`, `action`) of the element `css`.
async fn link(browser: &Client, css: &str, property: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .prop(property)
        .await
        .expect("property")
        .unwrap_or_default()
}

/// The dashboard's client at the test identity provider.
const DASHBOARD_CLIENT: &str = "jumpstarter-dashboard";

/// Logs `user` in through Dex's own login form, starting from the dashboard's login page.
async fn log_in_with_sso(browser: &Client, url: &str, dex: &Dex, user: &str) {
    browser.goto(url).await.expect("open the dashboard");
    fill_in(browser, &[], "#sso-login").await;
    // Dex's password form (its only connector, so it shows directly).
    browser
        .wait()
        .at_most(LIVE_TIMEOUT)
        .for_element(Locator::Css("input#login"))
        .await
        .unwrap_or_else(|e| panic!("Dex's login form: {e}"));
    let user = dex.user(user);
    fill_in(
        browser,
        &[
            ("input#login", &user.email),
            ("input#password", &user.password),
        ],
        "#submit-login",
    )
    .await;
}

async fn single_sign_on_lets_users_look_and_admins_act(mode: Mode) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}/");
    let secrets = tempfile::tempdir().expect("tempdir");
    let client_secret = uuid::Uuid::new_v4().simple().to_string();
    let dex = Dex::start(DexOptions {
        web_clients: vec![DexWebClient {
            id: DASHBOARD_CLIENT.to_owned(),
            secret: client_secret.clone(),
            redirect_uris: vec![format!("http://{listen}/oidc/callback")],
        }],
        users: vec![
            DexUser::new("alice"),
            DexUser::new("bob"),
            // An admin by group, and a user outside the lab's group.
            DexUser {
                groups: vec!["jumpstarter-users".into(), "lab-admins".into()],
                ..DexUser::new("carol")
            },
            DexUser {
                groups: vec!["guests".into()],
                ..DexUser::new("eve")
            },
        ],
        ..DexOptions::default()
    })
    .await
    .expect("start Dex");
    // The provider is trusted the 0.9.0 way (authentication.jwt), with the dashboard's
    // client among its audiences; users are `dex:<preferred_username>`.
    let config = secrets.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"authentication:
  jwt:
    - issuer:
        url: {issuer}
        audiences: [jumpstarter-cli, {DASHBOARD_CLIENT}]
        audienceMatchPolicy: MatchAny
        certificateAuthority: {ca}
      claimMappings:
        username:
          claim: preferred_username
          prefix: "dex:"
        groups:
          claim: groups
          prefix: "dex:"
"#,
            issuer = dex.issuer(),
            ca = dex.ca_file().display(),
        ),
    )
    .expect("config");
    let secret_file = secrets.path().join("client-secret");
    std::fs::write(&secret_file, &client_secret).expect("secret");
    let token_file = secrets.path().join("dashboard-token");
    std::fs::write(&token_file, "k8s-dashboard-credential-0123456789\n").expect("token");
    let (config_arg, secret_arg, token_arg) = (
        config.to_string_lossy().into_owned(),
        secret_file.to_string_lossy().into_owned(),
        token_file.to_string_lossy().into_owned(),
    );
    let mut args = vec![
        "--config",
        &config_arg,
        "--dashboard-listen",
        &listen,
        "--dashboard-actions",
        "--dashboard-oidc-client-id",
        DASHBOARD_CLIENT,
        "--dashboard-oidc-client-secret-file",
        &secret_arg,
        "--dashboard-oidc-scopes",
        "openid,profile,groups",
        "--dashboard-admin",
        "dex:alice",
        "--dashboard-admin-group",
        "dex:lab-admins",
        "--dashboard-user-group",
        "dex:jumpstarter-users",
    ];
    if mode == Mode::Kubernetes {
        args.extend(["--dashboard-token-file", &token_arg]);
    }
    let mut lab = Lab::start_with(mode, "e2e-dashboard-sso", &args)
        .await
        .expect("start lab");
    lab.start_exporter("board-1", &["board=mock"])
        .await
        .expect("exporter");
    let probe = lab.create_client("probe").await.expect("client");
    let probe = probe.to_string_lossy().into_owned();
    lab.wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .expect("online");
    let lease = lab
        .create_lease(&probe, &["-l", "board=mock", "--duration", "10m"])
        .await;
    lab.wait_lease(&lease, "Ready", LEASE_TIMEOUT, is_ready)
        .await;

    let driver = Driver::start(lab.path("chromedriver-sso.log")).await;
    let browser = driver.browser_with(true).await;
    let mode_name = match mode {
        Mode::Standalone => "standalone",
        Mode::Kubernetes => "kubernetes",
    };

    // A return from the provider that this browser did not start is refused.
    browser
        .goto(&format!("{url}oidc/callback?code=forged&state=forged"))
        .await
        .expect("forged return");
    wait_text(&browser, "#login-error", "the forged return refused", |t| {
        t.contains("does not belong to this browser")
    })
    .await;
    assert!(!text(&browser, "body").await.contains("board-1"));
    // The refusal's page leads back to both logins.
    assert_eq!(
        link(&browser, "#sso-login", "href").await,
        format!("{url}oidc/login")
    );
    assert_eq!(
        link(&browser, "form", "action").await,
        format!("{url}login")
    );

    // bob is no admin: he sees the lab, and no action.
    browser.goto(&url).await.expect("open the dashboard");
    screenshot(&browser, &format!("{mode_name}-sso-login.png")).await;
    log_in_with_sso(&browser, &url, &dex, "bob").await;
    wait_text(&browser, "#whoami", "bob logged in", |t| t == "dex:bob").await;
    let board = wait_text(
        &browser,
        "#exporters tr[data-name=\"board-1\"]",
        "board-1 leased",
        |t| t.contains("leased"),
    )
    .await;
    assert!(board.contains(&lease), "{board}");
    assert!(
        browser.find(Locator::Css("#leases button")).await.is_err(),
        "bob is offered an action"
    );
    // Asked for anyway, the action is refused.
    let status = browser
        .execute(
            &format!("return fetch('leases/{lease}/end', {{method: 'POST'}}).then(r => r.status)"),
            vec![],
        )
        .await
        .expect("post as bob");
    assert_eq!(status, serde_json::json!(403));
    browser
        .goto(&format!("{url}logout"))
        .await
        .expect("log out");
    assert!(!text(&browser, "body").await.contains("board-1"));

    // alice is: she ends the lease from the page.
    log_in_with_sso(&browser, &url, &dex, "alice").await;
    wait_text(&browser, "#whoami", "alice logged in", |t| t == "dex:alice").await;
    screenshot(&browser, &format!("{mode_name}-sso-admin.png")).await;
    browser
        .find(Locator::Css(&format!(
            "#leases tr[data-name=\"{lease}\"] button"
        )))
        .await
        .expect("alice is offered to end the lease")
        .click()
        .await
        .expect("end the lease");
    wait_text(
        &browser,
        "#exporters tr[data-name=\"board-1\"]",
        "board-1 free again",
        |t| t.contains("free"),
    )
    .await;
    let ended = lab.lease(&lease).await.expect("the lease");
    assert!(
        ended.status.as_ref().is_some_and(|s| s.ended),
        "{:?}",
        ended.status
    );
    // The action is logged under alice's name; bob's refusal under his.
    let log = lab.controller_output();
    assert!(
        log.lines().any(|l| l.contains("dashboard action")
            && l.contains("dex:alice")
            && l.contains(&lease)),
        "no logged action by dex:alice on {lease}:\n{}",
        lab.logs()
    );
    assert!(
        log.lines()
            .any(|l| l.contains("not an admin") && l.contains("dex:bob")),
        "no logged refusal of dex:bob:\n{}",
        lab.logs()
    );
    browser.close().await.expect("close the browser");
}

jumpstarter_e2e::in_both_modes!(single_sign_on_lets_users_look_and_admins_act);

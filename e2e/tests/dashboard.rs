//! The lab dashboard in a real browser (Debian's headless Chromium, driven through its
//! WebDriver), in both modes, with exporters and leases made by the real 0.9.0 tools: the
//! page refuses access without the credential, shows the exporters and leases, follows a
//! lease being created and released without a reload, and filters by label selector.
//!
//! Screenshots are saved under `target/dashboard-screenshots/` (the README's comes from
//! there, copied to `docs/`).
#![allow(clippy::await_holding_lock)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use jumpstarter_e2e::lease::is_ready;
use jumpstarter_e2e::{Lab, Mode, free_port};

/// One browser at a time: Chromium needs the CPU.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// Types `token` into the login form and submits it.
async fn log_in(browser: &Client, token: &str) {
    browser
        .find(Locator::Css("#token"))
        .await
        .expect("token field")
        .send_keys(token)
        .await
        .expect("type");
    browser
        .find(Locator::Css("#login"))
        .await
        .expect("login button")
        .click()
        .await
        .expect("submit");
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
    let field = browser
        .find(Locator::Css("#selector"))
        .await
        .expect("selector field");
    field.send_keys("board in (other)").await.expect("type");
    browser
        .find(Locator::Css("#filter button"))
        .await
        .expect("filter button")
        .click()
        .await
        .expect("filter");
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

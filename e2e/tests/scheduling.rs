//! Scheduling with the real jumpstarter 0.9.0 tools, in both modes: priorities from the
//! ExporterAccessPolicy, the queue position `jmp get leases` shows, spot access preempted
//! by a regular lease, a booked lease that keeps its exporter from its begin time, and an
//! idle lease that ends under a rule's idle timeout.
//!
//! Policies are applied with `jumpstarter admin apply -f`, as an operator would in either
//! mode. Tests run one at a time (each starts Python processes that need the CPU).
#![allow(clippy::await_holding_lock)]

use std::time::{Duration, Instant};

use jumpstarter_e2e::lease::{exporter_of, is_ended, is_ready};
use jumpstarter_e2e::{Lab, Mode, serial};

const SHELL_TIMEOUT: Duration = Duration::from_secs(180);
const ONLINE_TIMEOUT: Duration = Duration::from_secs(90);
const LEASE_TIMEOUT: Duration = Duration::from_secs(45);

/// A lab with exporter `board-1` (`board=mock`) online, and clients with the given `tier`
/// labels (set by applying their Client objects), whose configuration paths it returns.
async fn lab_with_tiers(mode: Mode, prefix: &str, clients: &[(&str, &str)]) -> (Lab, Vec<String>) {
    let mut lab = Lab::start(mode, prefix).await.expect("start lab");
    lab.start_exporter("board-1", &["board=mock"])
        .await
        .expect("exporter");
    let mut configs = Vec::new();
    let mut manifest = String::new();
    for (name, tier) in clients {
        let path = lab.create_client(name).await.expect("client");
        configs.push(path.to_string_lossy().into_owned());
        manifest.push_str(&format!(
            "---\napiVersion: jumpstarter.dev/v1alpha1\nkind: Client\nmetadata:\n  name: {name}\n  \
             labels:\n    tier: {tier}\nspec: {{}}\n"
        ));
    }
    apply(&lab, "clients.yaml", &manifest).await;
    lab.wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .expect("online");
    (lab, configs)
}

/// `jumpstarter admin apply -f FILE` with `yaml` written to FILE in the lab directory.
async fn apply(lab: &Lab, file: &str, yaml: &str) -> String {
    let path = lab.path(file);
    std::fs::write(&path, yaml).expect("write manifest");
    lab.admin(&["apply", "-f", &path.to_string_lossy()])
        .await
        .unwrap_or_else(|e| panic!("apply {file}: {e:#}\n{yaml}"))
}

/// The messages of lease `name`'s conditions as `jmp get leases -o json` shows them to
/// `client`.
async fn jmp_condition_messages(lab: &Lab, client: &str, name: &str) -> Vec<String> {
    let out = lab
        .jmp(
            &["get", "leases", "--client-config", client, "-o", "json"],
            Duration::from_secs(60),
        )
        .await
        .expect("jmp get leases");
    assert!(out.ok(), "jmp get leases: {out}");
    let value: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("jmp get leases -o json: {e}: {}", out.stdout));
    let leases = value["leases"].as_array().cloned().unwrap_or_default();
    let lease = leases
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {}", out.stdout));
    lease["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["message"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `jmp get leases` shows lease `name` at queue position `position`.
async fn wait_position(lab: &Lab, client: &str, name: &str, position: u32) {
    let wanted = format!("position {position} in the queue");
    let deadline = Instant::now() + LEASE_TIMEOUT;
    loop {
        let messages = jmp_condition_messages(lab, client, name).await;
        if messages.iter().any(|m| m.contains(&wanted)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no '{wanted}' in {messages:?}\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn waits(lease: &jumpstarter_controller::crd::Lease) -> bool {
    !is_ended(lease) && exporter_of(lease).is_none()
}

/// Two waiting leases: the newer one of a high-priority client is served first; both see
/// their queue position in `jmp get leases`, and the admin table shows POSITION.
async fn a_high_priority_lease_is_served_before_an_older_low_priority_one(mode: Mode) {
    let (lab, configs) = lab_with_tiers(
        mode,
        "e2e-priority",
        &[("holder", "low"), ("low", "low"), ("high", "high")],
    )
    .await;
    let [holder, low, high] = [&configs[0], &configs[1], &configs[2]];
    apply(
        &lab,
        "policy.yaml",
        "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterAccessPolicy\nmetadata:\n  \
         name: tiers\nspec:\n  exporterSelector:\n    matchLabels:\n      board: mock\n  \
         policies:\n  - description: low tier\n    priority: 1\n    from:\n    - \
         clientSelector:\n        matchLabels:\n          tier: low\n  - description: high \
         tier\n    priority: 10\n    from:\n    - clientSelector:\n        matchLabels:\n          \
         tier: high\n",
    )
    .await;

    let held = lab
        .create_lease(holder, &["-l", "board=mock", "--duration", "10m"])
        .await;
    lab.wait_lease(&held, "Ready", LEASE_TIMEOUT, is_ready)
        .await;
    let older = lab
        .create_lease(low, &["-l", "board=mock", "--duration", "10m"])
        .await;
    lab.wait_lease(&older, "queued", LEASE_TIMEOUT, waits).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let newer = lab
        .create_lease(high, &["-l", "board=mock", "--duration", "10m"])
        .await;

    // The high-priority lease is first in line, the older low-priority one second.
    wait_position(&lab, high, &newer, 1).await;
    wait_position(&lab, low, &older, 2).await;
    let table = lab
        .admin(&["get", "leases"])
        .await
        .expect("admin get leases");
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("POSITION") && header.contains("ETA"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&newer))
        .unwrap_or_else(|| panic!("{newer} not in {table}"));
    assert!(row.split_whitespace().any(|w| w == "1"), "{table}");

    lab.delete_lease(holder, &held).await;
    let served = lab
        .wait_lease(&newer, "Ready", LEASE_TIMEOUT, is_ready)
        .await;
    assert_eq!(exporter_of(&served).as_deref(), Some("board-1"));
    assert_eq!(served.status.as_ref().and_then(|s| s.priority), Some(10));
    let still = lab.lease(&older).await.expect("older");
    assert!(waits(&still), "{:?}", still.status);
    wait_position(&lab, low, &older, 1).await;

    let out = lab
        .jmp(
            &[
                "shell",
                "--client-config",
                high,
                "--lease",
                &newer,
                "--",
                "j",
                "power",
                "on",
            ],
            SHELL_TIMEOUT,
        )
        .await
        .expect("jmp shell");
    assert!(out.ok(), "jmp shell: {out}\n{}", lab.logs());
}

/// A spot holder's `jmp shell` session ends with its lease, preempted, when a regular
/// lease needs the exporter; the regular client's `j power on` then works.
async fn a_spot_lease_is_preempted_by_a_regular_one(mode: Mode) {
    let (lab, configs) = lab_with_tiers(
        mode,
        "e2e-spot",
        &[("spot", "spot"), ("regular", "regular")],
    )
    .await;
    let [spot, regular] = [&configs[0], &configs[1]];
    apply(
        &lab,
        "policy.yaml",
        "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterAccessPolicy\nmetadata:\n  \
         name: spot\nspec:\n  exporterSelector:\n    matchLabels:\n      board: mock\n  \
         policies:\n  - description: spare capacity\n    spotAccess: true\n    \
         spotGracePeriod: 5s\n    from:\n    - clientSelector:\n        matchLabels:\n          \
         tier: spot\n  - description: regular\n    from:\n    - clientSelector:\n        \
         matchLabels:\n          tier: regular\n",
    )
    .await;

    // The spot client's shell holds the exporter with a command that would run for long.
    let mut spot_shell = lab.jmp_command(&[
        "shell",
        "--client-config",
        spot,
        "-l",
        "board=mock",
        "--duration",
        "30m",
        "--",
        "sh",
        "-c",
        // `exec`: the command itself gets the hang-up 0.9.0 sends when its lease ends
        // (a `sleep` left behind by `sh` would keep the output pipes open).
        "j power on && echo spot-session-up && exec sleep 600",
    ]);
    let spot_log = lab.path("spot-shell.log");
    let log = std::fs::File::create(&spot_log).expect("spot shell log");
    spot_shell
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true);
    let mut spot_child = spot_shell.spawn().expect("spot jmp shell");
    let spot_lease = wait_for_lease_of(&lab, "spot").await;
    let granted = lab
        .wait_lease(&spot_lease, "Ready", LEASE_TIMEOUT, is_ready)
        .await;
    assert_eq!(
        granted.status.as_ref().and_then(|s| s.spot_access),
        Some(true)
    );
    // The session is up (0.9.0's shell hangs if its lease ends while it connects).
    let deadline = Instant::now() + SHELL_TIMEOUT;
    loop {
        let output = std::fs::read_to_string(&spot_log).unwrap_or_default();
        if output.contains("spot-session-up") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spot shell never ran its command:\n{output}\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The regular client's shell waits for the exporter, then powers it on.
    let started = Instant::now();
    let out = lab
        .jmp(
            &[
                "shell",
                "--client-config",
                regular,
                "-l",
                "board=mock",
                "--",
                "j",
                "power",
                "on",
            ],
            SHELL_TIMEOUT,
        )
        .await
        .expect("regular jmp shell");
    assert!(out.ok(), "regular jmp shell: {out}\n{}", lab.logs());
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "the regular lease was served before the spot lease's 5 s notice ran out"
    );

    // The spot lease ended as preempted, and its shell ended with it.
    let ended = lab.lease(&spot_lease).await.expect("spot lease");
    assert!(is_ended(&ended), "{:?}", ended.status);
    let conditions = ended
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Preempted"),
        "{conditions:?}"
    );
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Preempted" && c.message.contains("needed by lease")),
        "{conditions:?}"
    );
    // 0.9.0's lease monitor looks at the lease at least every 30 s and hangs up the
    // command once it has ended. On a loaded machine 0.9.0's shell sometimes goes on
    // re-dialling instead (a race in the client: its status monitor keeps retrying); the
    // service's part is then to refuse every new connection of the ended lease, which the
    // shell reports as "lease not active".
    let ended = tokio::time::timeout(Duration::from_secs(90), spot_child.wait()).await;
    let output = std::fs::read_to_string(&spot_log).unwrap_or_default();
    match ended {
        Ok(status) => {
            let status = status.expect("spot shell");
            assert!(
                !status.success() || output.contains("ended"),
                "the spot shell's command was cut short: {status:?}\n{output}"
            );
        }
        Err(_) => {
            let _ = spot_child.kill().await;
            assert!(
                output.contains("ended") && output.contains("lease not active"),
                "the spot shell goes on after its lease ended, and reaches the exporter:\n\
                 {output}\n{}",
                lab.logs()
            );
        }
    }
}

/// The name of the one lease of client `client`, once it exists.
async fn wait_for_lease_of(lab: &Lab, client: &str) -> String {
    let deadline = Instant::now() + LEASE_TIMEOUT;
    loop {
        let leases = lab.leases().await.expect("leases");
        if let Some(lease) = leases.iter().find(|l| l.spec.client_ref.name == client) {
            return lease.metadata.name.clone().expect("name");
        }
        assert!(
            Instant::now() < deadline,
            "no lease of {client}\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A booked lease keeps its exporter: a selector lease that would still hold it at the
/// booking's begin time waits, and the booking starts at its begin time.
async fn a_booked_lease_starts_at_its_begin_time(mode: Mode) {
    let (lab, configs) =
        lab_with_tiers(mode, "e2e-booking", &[("booker", "a"), ("other", "a")]).await;
    let [booker, other] = [&configs[0], &configs[1]];
    let begin = time::OffsetDateTime::now_utc() + time::Duration::seconds(20);
    let begin_text = begin
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let booked = lab
        .create_lease(
            booker,
            &[
                "-n",
                "board-1",
                "--begin-time",
                &begin_text,
                "--duration",
                "2m",
            ],
        )
        .await;
    // An overlapping booking of the same exporter is refused, naming the first one...
    let overlapping = [
        "create",
        "lease",
        "--client-config",
        other.as_str(),
        "-n",
        "board-1",
        "--begin-time",
        &begin_text,
        "--duration",
        "1m",
    ];
    let refused = lab
        .jmp(&overlapping, Duration::from_secs(60))
        .await
        .expect("jmp create lease");
    assert!(
        !refused.ok()
            && refused.stderr.contains(&booked)
            && refused.stderr.contains("booking=queue"),
        "an overlapping booking must be refused: {refused}"
    );
    // ...unless it asks to queue.
    let mut queued = overlapping.to_vec();
    queued.extend(["--tag", "booking=queue"]);
    let queued = lab.create_lease(other, &queued[4..]).await;
    assert_ne!(queued, booked);

    let waiting = lab
        .create_lease(other, &["-l", "board=mock", "--duration", "10m"])
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pending = lab.lease(&waiting).await.expect("selector lease");
    assert!(waits(&pending), "{:?}", pending.status);
    let messages = jmp_condition_messages(&lab, other, &waiting).await;
    assert!(
        messages
            .iter()
            .any(|m| m.contains("kept for booked leases") && m.contains(&booked)),
        "{messages:?}"
    );

    let ready = lab
        .wait_lease(&booked, "Ready", Duration::from_secs(60), is_ready)
        .await;
    let started = ready
        .status
        .as_ref()
        .and_then(|s| s.begin_time.clone())
        .expect("beginTime")
        .0;
    let late = started.as_second() - begin.unix_timestamp();
    assert!(
        (0..=5).contains(&late),
        "the booking started {late} s after its begin time"
    );
    assert_eq!(exporter_of(&ready).as_deref(), Some("board-1"));
    let still = lab.lease(&waiting).await.expect("selector lease");
    assert!(waits(&still), "{:?}", still.status);
    let out = lab
        .jmp(
            &[
                "shell",
                "--client-config",
                booker,
                "--lease",
                &booked,
                "--",
                "j",
                "power",
                "on",
            ],
            SHELL_TIMEOUT,
        )
        .await
        .expect("jmp shell");
    assert!(out.ok(), "jmp shell: {out}\n{}", lab.logs());
}

/// Under a rule with `idleTimeout`, a lease without a session ends as `Idle` (and its
/// exporter goes to the next lease), while a lease whose `jmp shell` runs longer than the
/// timeout keeps going.
async fn an_idle_lease_ends_and_a_lease_in_use_does_not(mode: Mode) {
    let (mut lab, configs) =
        lab_with_tiers(mode, "e2e-idle", &[("idler", "a"), ("worker", "a")]).await;
    let [idler, worker] = [&configs[0], &configs[1]];
    lab.start_exporter("board-2", &["board=mock"])
        .await
        .expect("exporter");
    lab.wait_exporter_condition("board-2", "Online", "True", ONLINE_TIMEOUT)
        .await
        .expect("online");
    let policy = |timeout: &str| {
        format!(
            "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterAccessPolicy\nmetadata:\n  \
             name: idle\nspec:\n  exporterSelector:\n    matchLabels:\n      board: mock\n  \
             policies:\n  - description: lab\n    idleTimeout: {timeout}\n    from:\n    - \
             clientSelector:\n        matchLabels:\n          tier: a\n"
        )
    };
    // Shorter than an open 0.9.0 shell's lease checks: refused, naming the field.
    std::fs::write(lab.path("short.yaml"), policy("30s")).expect("write manifest");
    let refused = lab
        .admin(&["apply", "-f", &lab.path("short.yaml").to_string_lossy()])
        .await
        .expect_err("a 30s idle timeout must be refused");
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("spec.policies[0].idleTimeout") && refused.contains("1m"),
        "{refused}"
    );
    apply(&lab, "policy.yaml", &policy("1m")).await;

    let idle = lab
        .create_lease(idler, &["-n", "board-1", "--duration", "30m"])
        .await;
    let used = lab
        .create_lease(worker, &["-n", "board-2", "--duration", "30m"])
        .await;
    for lease in [&idle, &used] {
        let ready = lab
            .wait_lease(lease, "Ready", LEASE_TIMEOUT, is_ready)
            .await;
        assert_eq!(
            ready
                .status
                .as_ref()
                .and_then(|s| s.idle_timeout.as_deref()),
            Some("1m0s")
        );
    }
    // The worker's shell runs well past the timeout (0.9.0 checks its lease every 30 s).
    let shell_args = [
        "shell",
        "--client-config",
        worker,
        "--lease",
        &used,
        "--",
        "sh",
        "-c",
        "j power on && sleep 90 && j power off",
    ];
    let shell = lab.jmp(&shell_args, SHELL_TIMEOUT);
    let idle_end = async {
        // One minute plus the 10 s the recorded activity may lag by, and some slack.
        lab.wait_lease(&idle, "ended", Duration::from_secs(120), is_ended)
            .await
    };
    let (shell, ended) = tokio::join!(shell, idle_end);
    let shell = shell.expect("jmp shell");
    assert!(
        shell.ok(),
        "the shell of a lease in use: {shell}\n{}",
        lab.logs()
    );

    let status = ended.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Idle"),
        "{status:?}"
    );
    assert!(
        ready.message.contains("no session for 1m0s"),
        "{}",
        ready.message
    );
    let begin = status.begin_time.expect("beginTime").0;
    let end = status.end_time.expect("endTime").0;
    let idle_for = end.as_second() - begin.as_second();
    assert!(
        (60..=85).contains(&idle_for),
        "the idle lease ended {idle_for} s after it started"
    );
    // The lease in use is still held, and its exporter's shell worked throughout.
    let used_now = lab.lease(&used).await.expect("lease in use");
    assert!(is_ready(&used_now), "{:?}", used_now.status);
    // The idle lease's exporter goes to the next lease.
    let next = lab
        .create_lease(worker, &["-n", "board-1", "--duration", "5m"])
        .await;
    lab.wait_lease(&next, "Ready", LEASE_TIMEOUT, is_ready)
        .await;
}

jumpstarter_e2e::in_both_modes!(
    a_high_priority_lease_is_served_before_an_older_low_priority_one,
    a_spot_lease_is_preempted_by_a_regular_one,
    a_booked_lease_starts_at_its_begin_time,
    an_idle_lease_ends_and_a_lease_in_use_does_not,
);

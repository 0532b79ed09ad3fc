use std::time::Duration as StdDuration;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::*;

/// What the 0.9.0 operator writes into key `config` (with one JWT authenticator for the
/// cluster issuer, as the Helm values' example shows).
const OPERATOR_CONFIG: &str = r#"
authentication:
  internal:
    prefix: "internal:"
    tokenLifetime: 43800h
  k8s:
    enabled: false
  jwt:
  - issuer:
      url: https://kubernetes.default.svc.cluster.local
      audiences: [https://kubernetes.default.svc.cluster.local]
      certificateAuthority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
    claimMappings:
      username:
        claim: sub
        prefix: "kubernetes:"
provisioning:
  enabled: true
grpc:
  keepalive:
    minTime: 3s
    permitWithoutStream: true
    timeout: 180s
    intervalTime: 10s
    maxConnectionIdle: 30m
    maxConnectionAge: 24h
    maxConnectionAgeGrace: 1m30s
leasePolicy:
  maxTags: 5
hiddenLabels:
  keys: [internal.example.com/serial]
deprecatedLabels:
  keys:
    board: "use example.com/board instead"
"#;

const ROUTERS: &str = r#"
default:
  endpoint: router.example.com:443
router-1:
  endpoint: router-1.example.com:443
  labels:
    router-index: "1"
"#;

#[test]
fn the_operator_config_reads_as_written() {
    let config = UpstreamConfig::parse(Some(OPERATOR_CONFIG), Some(ROUTERS), None).unwrap();
    let auth = &config.authentication;
    assert_eq!(auth.internal_prefix.as_deref(), Some("internal:"));
    assert_eq!(auth.token_lifetime, Some(time::Duration::hours(43_800)));
    assert!(!auth.k8s_enabled);
    assert_eq!(auth.jwt.len(), 1);
    assert_eq!(
        auth.jwt[0]["claimMappings"]["username"]["prefix"],
        serde_json::json!("kubernetes:")
    );
    assert!(config.provisioning);
    assert_eq!(
        config.keepalive,
        Keepalive {
            min_time: Some(StdDuration::from_secs(3)),
            permit_without_stream: Some(true),
            timeout: Some(StdDuration::from_secs(180)),
            interval: Some(StdDuration::from_secs(10)),
            max_connection_idle: Some(StdDuration::from_secs(1800)),
            max_connection_age: Some(StdDuration::from_secs(24 * 3600)),
            max_connection_age_grace: Some(StdDuration::from_secs(90)),
        }
    );
    assert_eq!(config.max_tags, Some(5));
    assert_eq!(
        config.hidden_labels.as_deref(),
        Some(&["internal.example.com/serial".to_owned()][..])
    );
    assert_eq!(
        config.deprecated_labels.get("board").map(String::as_str),
        Some("use example.com/board instead")
    );
    let routers = config.routers.unwrap();
    assert_eq!(routers.len(), 2);
    assert_eq!(routers[0].name, "default");
    assert_eq!(routers[0].endpoint, "router.example.com:443");
    assert!(routers[0].labels.is_empty());
    assert_eq!(routers[1].name, "router-1");
    assert_eq!(
        routers[1].labels.get("router-index").map(String::as_str),
        Some("1")
    );
    assert!(!config.legacy_authentication);
}

#[test]
fn the_helm_chart_default_config_reads() {
    let config = UpstreamConfig::parse(
        Some(
            "authentication:\n  internal:\n    prefix: \"internal:\"\n  jwt: []\n\
             grpc:\n  keepalive:\n    minTime: 3s\n    permitWithoutStream: true\n",
        ),
        None,
        None,
    )
    .unwrap();
    assert_eq!(config.keepalive.min_time, Some(StdDuration::from_secs(3)));
    assert!(config.authentication.jwt.is_empty());
    assert_eq!(config.routers, None);
    assert_eq!(config.max_tags, None);
}

#[test]
fn unknown_keys_are_errors_naming_their_path() {
    let error = UpstreamConfig::parse(Some("grpc:\n  keepalive:\n    minTim: 1s\n"), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("config: grpc.keepalive: unknown field `minTim`, expected one of"),
        "{error}"
    );
    assert!(error.contains("`minTime`"), "{error}");
    let error = UpstreamConfig::parse(Some("leasPolicy: {}\n"), None, None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `leasPolicy`"), "{error}");
    let error = UpstreamConfig::parse(
        Some("authentication:\n  internal:\n    prefx: x\n"),
        None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("config: authentication.internal: unknown field `prefx`"),
        "{error}"
    );
    let error = UpstreamConfig::parse(None, Some("default:\n  endpint: r:1\n"), None)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("router: default: unknown field `endpint`"),
        "{error}"
    );
    let error = UpstreamConfig::parse(None, None, Some("internal: {}\nextra: 1\n"))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("authentication: unknown field `extra`"),
        "{error}"
    );
}

#[test]
fn bad_values_are_errors_naming_their_path() {
    let cases = [
        (
            "grpc:\n  keepalive:\n    timeout: soon\n",
            "config: grpc.keepalive.timeout: time: invalid duration \"soon\"",
        ),
        (
            "grpc:\n  keepalive:\n    intervalTime: -1s\n",
            "config: grpc.keepalive.intervalTime: \"-1s\" is negative",
        ),
        (
            "authentication:\n  internal:\n    tokenLifetime: 0s\n",
            "config: authentication.internal.tokenLifetime: \"0s\" must be positive",
        ),
        (
            "authentication:\n  internal:\n    tokenLifetime: 30d\n",
            "config: authentication.internal.tokenLifetime: time: unknown unit \"d\"",
        ),
        (
            "leasePolicy:\n  maxTags: -1\n",
            "config: leasePolicy.maxTags: -1 is negative",
        ),
        (
            "provisioning:\n  enabled: maybe\n",
            "config: provisioning.enabled: invalid type",
        ),
        ("- a\n", "config: invalid type: sequence"),
    ];
    for (text, expected) in cases {
        let error = UpstreamConfig::parse(Some(text), None, None)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with(expected), "{text:?}: {error}");
    }
    let error = UpstreamConfig::parse(None, Some("default:\n  endpoint: https://r:443\n"), None)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("router: default.endpoint: \"https://r:443\" is not host:port"),
        "{error}"
    );
    let error = UpstreamConfig::parse(None, None, Some("kind: Config\n"))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("authentication: kind: \"Config\""),
        "{error}"
    );
}

#[test]
fn empty_and_absent_keys_are_defaults() {
    for text in ["", "# nothing\n", "null\n", "{}\n"] {
        let config = UpstreamConfig::parse(Some(text), Some(text), None).unwrap();
        assert_eq!(config.authentication, Authentication::default(), "{text:?}");
        assert_eq!(config.routers, Some(Vec::new()), "{text:?}");
        assert!(!config.provisioning);
    }
    let config = UpstreamConfig::parse(None, None, None).unwrap();
    assert_eq!(config, UpstreamConfig::default());
    // Keys written without a value are absent keys.
    let config = UpstreamConfig::parse(
        Some("authentication:\n  jwt:\ngrpc:\n  keepalive:\nhiddenLabels:\n"),
        None,
        None,
    )
    .unwrap();
    assert!(config.authentication.jwt.is_empty());
    assert_eq!(config.keepalive, Keepalive::default());
    assert_eq!(config.hidden_labels, None);
}

#[test]
fn the_legacy_authentication_key_wins_over_config() {
    let legacy = r#"
apiVersion: jumpstarter.dev/v1alpha1
kind: AuthenticationConfiguration
internal:
  prefix: "legacy:"
jwt:
- issuer:
    url: https://dex.example.com
    audiences: [jumpstarter-cli]
  claimMappings:
    username:
      claim: email
      prefix: "dex:"
"#;
    let config = UpstreamConfig::parse(Some(OPERATOR_CONFIG), Some(ROUTERS), Some(legacy)).unwrap();
    assert!(config.legacy_authentication);
    assert_eq!(
        config.authentication.internal_prefix.as_deref(),
        Some("legacy:")
    );
    assert_eq!(config.authentication.token_lifetime, None);
    assert_eq!(
        config.authentication.jwt[0]["issuer"]["url"],
        serde_json::json!("https://dex.example.com")
    );
    assert!(
        !config.provisioning,
        "provisioning is off with the legacy key"
    );
    assert_eq!(config.max_tags, Some(10));
    assert_eq!(config.keepalive.min_time, Some(StdDuration::from_secs(1)));
    assert_eq!(config.keepalive.permit_without_stream, Some(true));
    assert_eq!(config.keepalive.interval, None);
    assert_eq!(config.hidden_labels, None);
    assert!(config.deprecated_labels.is_empty());
    // The router key is read either way.
    assert_eq!(config.routers.map(|r| r.len()), Some(2));
    // A broken config key does not matter when the legacy key is there (0.9.0 never reads it).
    assert!(UpstreamConfig::parse(Some("bogus: 1\n"), None, Some(legacy)).is_ok());
}

/// A command line like the controller's: the flags that the configuration can also set.
#[derive(Debug, Parser)]
struct Flags {
    #[command(flatten)]
    lifetimes: crate::flags::LifetimeArgs,
    #[arg(long, env = "UPSTREAM_TEST_MAX_TAGS", default_value_t = 10)]
    max_tags: usize,
    #[arg(long = "hidden-label", value_delimiter = ',')]
    hidden_labels: Vec<String>,
    #[arg(long = "router", value_parser = RouterEntry::parse)]
    routers: Vec<RouterEntry>,
    #[command(flatten)]
    limits: PortLimits,
}

fn flags(args: &[&str]) -> (Flags, GivenFlags) {
    let matches = Flags::command()
        .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
        .unwrap();
    let flags = Flags::from_arg_matches(&matches).unwrap();
    (flags, GivenFlags::from_matches(&matches))
}

fn settings_of(flags: &Flags) -> Settings {
    let mut settings = Settings::example("lab", "c:1", "r:1");
    settings.token_lifetime = flags.lifetimes.token_lifetime.0;
    settings.max_tags = flags.max_tags;
    settings.hidden_labels = flags.hidden_labels.clone();
    if !flags.routers.is_empty() {
        settings.routers = flags.routers.clone();
    }
    settings
}

#[test]
fn the_configuration_fills_what_no_flag_gave() {
    let config = UpstreamConfig::parse(Some(OPERATOR_CONFIG), Some(ROUTERS), None).unwrap();
    let (flags, given) = flags(&[]);
    assert_eq!(given, GivenFlags::default());
    let mut settings = settings_of(&flags);
    config.apply(&mut settings, &given);
    assert_eq!(settings.token_lifetime, time::Duration::hours(43_800));
    assert_eq!(settings.max_tags, 5);
    assert_eq!(settings.hidden_labels, ["internal.example.com/serial"]);
    assert_eq!(settings.routers.len(), 2);
    assert_eq!(settings.internal_prefix, "internal:");
    assert_eq!(settings.jwt.len(), 1);
    assert!(settings.provisioning);
    assert_eq!(settings.deprecated_labels.len(), 1);

    let mut limits = flags.limits;
    let not_applied = config.apply_keepalive(&mut limits, &given);
    assert_eq!(limits.http2.keepalive_interval, StdDuration::from_secs(10));
    assert_eq!(limits.http2.keepalive_timeout, StdDuration::from_secs(180));
    assert_eq!(limits.accept.idle_timeout, StdDuration::from_secs(1800));
    assert_eq!(
        limits.http2.max_connection_age,
        Some(StdDuration::from_secs(24 * 3600))
    );
    assert_eq!(
        limits.http2.max_connection_age_grace,
        Some(StdDuration::from_secs(90))
    );
    assert_eq!(not_applied.len(), 1);
    assert!(not_applied[0].contains("minTime"), "{not_applied:?}");
}

#[test]
fn explicit_flags_win_over_the_configuration() {
    let config = UpstreamConfig::parse(Some(OPERATOR_CONFIG), Some(ROUTERS), None).unwrap();
    let (flags, given) = flags(&[
        "--token-lifetime=1h",
        "--max-tags=10",
        "--hidden-label=a",
        "--router=mine=m.example.com:443",
        "--http2-keepalive-interval=30s",
        "--http2-keepalive-timeout=20s",
        "--idle-timeout=5m",
    ]);
    assert_eq!(
        given,
        GivenFlags {
            token_lifetime: true,
            max_tags: true,
            hidden_labels: true,
            routers: true,
            keepalive_interval: true,
            keepalive_timeout: true,
            idle_timeout: true,
        }
    );
    let mut settings = settings_of(&flags);
    config.apply(&mut settings, &given);
    assert_eq!(settings.token_lifetime, time::Duration::hours(1));
    // Given explicitly, even though equal to the default.
    assert_eq!(settings.max_tags, 10);
    assert_eq!(settings.hidden_labels, ["a"]);
    assert_eq!(settings.routers.len(), 1);
    assert_eq!(settings.routers[0].name, "mine");
    // What no flag sets still comes from the configuration.
    assert!(settings.provisioning);
    assert_eq!(settings.jwt.len(), 1);
    let mut limits = flags.limits;
    config.apply_keepalive(&mut limits, &given);
    assert_eq!(limits.http2.keepalive_interval, StdDuration::from_secs(30));
    assert_eq!(limits.http2.keepalive_timeout, StdDuration::from_secs(20));
    assert_eq!(limits.accept.idle_timeout, StdDuration::from_secs(300));
}

#[test]
fn a_flag_given_through_its_environment_variable_is_explicit() {
    // PATH, which every process has, stands for the flag's environment variable (the
    // process environment is not changed).
    let matches = Flags::command()
        .mut_arg("max_tags", |arg| arg.env("PATH"))
        .try_get_matches_from(["t"]);
    // The value comes from the environment (and is not a number).
    assert!(matches.is_err(), "PATH is not a number of tags");
    let matches = Flags::command()
        .mut_arg("hidden_labels", |arg| arg.env("PATH"))
        .try_get_matches_from(["t"])
        .unwrap();
    assert!(GivenFlags::from_matches(&matches).hidden_labels);
    assert!(!GivenFlags::from_matches(&matches).max_tags);
}

#[test]
fn without_a_configuration_nothing_changes() {
    let (flags, given) = flags(&[]);
    let mut settings = settings_of(&flags);
    let before = format!("{settings:?}");
    UpstreamConfig::default().apply(&mut settings, &given);
    assert_eq!(format!("{settings:?}"), before);
    let mut limits = flags.limits;
    assert!(
        UpstreamConfig::default()
            .apply_keepalive(&mut limits, &given)
            .is_empty()
    );
    assert_eq!(limits, PortLimits::default());
}

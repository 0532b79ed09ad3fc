//! The endpoints the controller advertises, read from how it is started: the
//! `--grpc-endpoint` and `--router` flags of `jumpstarter-controller run` (or their
//! `JUMPSTARTER_GRPC_ENDPOINT` / `JUMPSTARTER_ROUTERS` environment variables) in the
//! controller Deployment's container. Clients and exporters get exactly these values
//! (`status.endpoint`, Dial answers), so they are what must be reachable.

use jumpstarter_controller::settings::RouterEntry;

/// The controller's default `--grpc-endpoint` (see `jumpstarter-controller run --help`).
pub(crate) const DEFAULT_GRPC_ENDPOINT: &str = "localhost:8082";

/// What clients and exporters are told to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Advertised {
    /// Controller gRPC endpoint `host:port`.
    pub(crate) controller: String,
    pub(crate) routers: Vec<RouterEntry>,
}

/// Reads the advertised endpoints from a `jumpstarter-controller run` container's `args`
/// and `env` (name, value; variables set from other sources are absent). Flags win over
/// the environment, as in the controller.
pub(crate) fn from_container(
    args: &[String],
    env: &[(String, String)],
) -> Result<Advertised, String> {
    let env_value = |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let grpc = flag_values(args, "--grpc-endpoint");
    let controller = grpc
        .last()
        .cloned()
        .or_else(|| env_value("JUMPSTARTER_GRPC_ENDPOINT"))
        .unwrap_or_else(|| DEFAULT_GRPC_ENDPOINT.to_owned());
    let mut router_values = flag_values(args, "--router");
    if router_values.is_empty()
        && let Some(list) = env_value("JUMPSTARTER_ROUTERS")
    {
        router_values = list
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
    }
    let routers = router_values
        .iter()
        .map(|value| RouterEntry::parse(value))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Advertised {
        controller,
        routers,
    })
}

/// Every value of `flag`, given as `--flag=value` or `--flag value`.
fn flag_values(args: &[String], flag: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == flag {
            if let Some(value) = iter.next() {
                values.push(value.clone());
            }
        } else if let Some(value) = arg
            .strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
        {
            values.push(value.to_owned());
        }
    }
    values
}

/// A `--router-endpoint` value: the controller's `--router` syntax
/// `name=host:port[;quic=host:port]`, or a bare `host:port` (named after itself, no QUIC).
pub(crate) fn parse_router_endpoint(text: &str) -> Result<RouterEntry, String> {
    let head = text.split(';').next().unwrap_or_default();
    if head.contains('=') {
        RouterEntry::parse(text)
    } else {
        let endpoint = text.trim();
        split_host_port(endpoint)?;
        Ok(RouterEntry {
            name: endpoint.to_owned(),
            endpoint: endpoint.to_owned(),
            labels: Default::default(),
            quic_endpoint: None,
        })
    }
}

/// `host:port` (IPv6 hosts in brackets) split into the host, without brackets, and the
/// port.
pub(crate) fn split_host_port(endpoint: &str) -> Result<(String, u16), String> {
    let bad = || format!("endpoint {endpoint:?} is not host:port");
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || host.contains("://") || host.contains('/') {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// A `--controller-endpoint` value.
pub(crate) fn parse_endpoint(text: &str) -> Result<String, String> {
    split_host_port(text.trim())?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_chart_s_arguments_give_the_controller_and_every_router() {
        let args = strings(&[
            "run",
            "--namespace=lab",
            "--grpc-endpoint=js-controller.lab.svc:8082",
            "--router=js-router-0=r0.example:8083;quic=r0.example:8083",
            "--router",
            "js-router-1=r1.example:443",
        ]);
        let advertised = from_container(&args, &[]).unwrap();
        assert_eq!(advertised.controller, "js-controller.lab.svc:8082");
        assert_eq!(advertised.routers.len(), 2);
        assert_eq!(advertised.routers[0].name, "js-router-0");
        assert_eq!(
            advertised.routers[0].quic_endpoint.as_deref(),
            Some("r0.example:8083")
        );
        assert_eq!(advertised.routers[1].endpoint, "r1.example:443");
        assert_eq!(advertised.routers[1].quic_endpoint, None);
    }

    #[test]
    fn the_environment_and_the_default_fill_in_for_missing_flags() {
        let env = vec![(
            "JUMPSTARTER_ROUTERS".to_owned(),
            "a=h:1, b=h:2;quic=h:2".to_owned(),
        )];
        let advertised = from_container(&strings(&["run"]), &env).unwrap();
        assert_eq!(advertised.controller, DEFAULT_GRPC_ENDPOINT);
        assert_eq!(advertised.routers.len(), 2);
        let env = vec![(
            "JUMPSTARTER_GRPC_ENDPOINT".to_owned(),
            "c.example:443".to_owned(),
        )];
        let advertised = from_container(&strings(&["run"]), &env).unwrap();
        assert_eq!(advertised.controller, "c.example:443");
        assert!(advertised.routers.is_empty());
        assert!(from_container(&strings(&["--router=nonsense"]), &[]).is_err());
    }

    #[test]
    fn router_endpoints_take_the_controller_syntax_or_a_bare_address() {
        let r = parse_router_endpoint("r=127.0.0.1:9;quic=127.0.0.1:9").unwrap();
        assert_eq!(
            (r.name.as_str(), r.quic_endpoint.as_deref()),
            ("r", Some("127.0.0.1:9"))
        );
        let r = parse_router_endpoint("[::1]:8083").unwrap();
        assert_eq!((r.name.as_str(), r.quic_endpoint), ("[::1]:8083", None));
        assert!(parse_router_endpoint("no-port").is_err());
        assert!(parse_router_endpoint("https://x:1").is_err());
        assert_eq!(
            split_host_port("[::1]:8083").unwrap(),
            ("::1".to_owned(), 8083)
        );
        assert!(parse_endpoint("host:notaport").is_err());
    }
}

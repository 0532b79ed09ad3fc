//! The fuzz targets by name: what the fuzzer binary, the seed writer and the corpus replay
//! agree on.

use std::fmt;

/// One decoder (or a pair of decoders reading the same input) under fuzzing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The `JMP` header opening every QUIC session stream (router, exporter, client).
    SessionHeader,
    /// The `JMR` certificate renewal request a peer sends the router.
    RenewalRequest,
    /// The router's reply to a renewal.
    RenewalReply,
    /// Label selector strings (`CreateLease`, `ListExporters` filters).
    Selector,
    /// Go durations (CRDs, `CreateLease`) and duration flag values.
    GoDuration,
    /// Client and exporter credentials (internal ES256 tokens).
    InternalToken,
    /// Router stream tokens, as the router verifies them and the edge reads them.
    RouterToken,
    /// PKCS#10 requests for lease certificates, signed by the controller's CA.
    LeaseCsr,
    /// Lease identities: the identity URI and the certificate it is read from.
    IdentityUri,
    /// The edge's tool configuration file (YAML).
    ToolConfig,
    /// The edge's rewriting of Listen / Dial response bodies.
    EndpointRewrite,
    /// Resource names of the client API (`namespaces/{ns}/leases/{name}`).
    ResourceName,
}

impl Target {
    /// Every target, in the order runs report them.
    pub const ALL: [Target; 12] = [
        Target::SessionHeader,
        Target::RenewalRequest,
        Target::RenewalReply,
        Target::Selector,
        Target::GoDuration,
        Target::InternalToken,
        Target::RouterToken,
        Target::LeaseCsr,
        Target::IdentityUri,
        Target::ToolConfig,
        Target::EndpointRewrite,
        Target::ResourceName,
    ];

    /// The name of the target's corpus folder and of its fuzzer argument.
    pub fn name(self) -> &'static str {
        match self {
            Target::SessionHeader => "session_header",
            Target::RenewalRequest => "renewal_request",
            Target::RenewalReply => "renewal_reply",
            Target::Selector => "selector",
            Target::GoDuration => "go_duration",
            Target::InternalToken => "internal_token",
            Target::RouterToken => "router_token",
            Target::LeaseCsr => "lease_csr",
            Target::IdentityUri => "identity_uri",
            Target::ToolConfig => "tool_config",
            Target::EndpointRewrite => "endpoint_rewrite",
            Target::ResourceName => "resource_name",
        }
    }

    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs the target on `data`; panics when a property does not hold.
    pub fn check(self, data: &[u8]) {
        match self {
            Target::SessionHeader => crate::session_header::check(data),
            Target::RenewalRequest => crate::renewal::check_request(data),
            Target::RenewalReply => crate::renewal::check_reply(data),
            Target::Selector => crate::selector::check(data),
            Target::GoDuration => crate::go_duration::check(data),
            Target::InternalToken => crate::token::check_internal(data),
            Target::RouterToken => crate::token::check_router(data),
            Target::LeaseCsr => crate::lease_csr::check(data),
            Target::IdentityUri => crate::identity_uri::check(data),
            Target::ToolConfig => crate::tool_config::check(data),
            Target::EndpointRewrite => crate::endpoint_rewrite::check(data),
            Target::ResourceName => crate::resource_name::check(data),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

//! [`Forwarder`]: offers a Dial to the live peer replicas, and [`decide`], the pure rule
//! that combines their answers.
//!
//! Every live peer with an endpoint is asked at once; a peer that cannot be reached within
//! [`CONNECT_TIMEOUT`] or does not answer within [`CALL_TIMEOUT`] counts as not listening
//! (and as a call failure in the metrics). One channel per peer endpoint is kept and
//! reused; channels of peers no longer live are dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use time::OffsetDateTime;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request};

use jumpstarter_proto::jumpstarter::peer::v1::peer_service_client::PeerServiceClient;
use jumpstarter_proto::jumpstarter::peer::v1::{OfferRequest, Outcome};
use jumpstarter_proto::jumpstarter::v1::ListenResponse;

use super::{CALL_TIMEOUT, CONNECT_TIMEOUT, PeerMetrics, TOKEN_LIFETIME};
use crate::keys::live::LiveKeys;
use crate::replica::ReplicaRegistry;

/// What became of a Dial offered to the peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// A peer queued it for the exporter listening there.
    Queued,
    /// A peer has the exporter listening, with a full queue (and none queued it).
    Full,
    /// No live peer has the exporter listening (or none answered).
    NotListening,
}

/// One peer's answer, or why there was none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAnswer {
    Answered(Outcome),
    /// No answer; the reason is the failure metric's label.
    Failed(&'static str),
}

/// Combines the peers' answers: any queued wins, else any full, else not listening
/// (peers that did not answer, or answered nonsense, count as not listening).
pub fn decide(answers: &[PeerAnswer]) -> Forwarded {
    let said = |o: Outcome| answers.contains(&PeerAnswer::Answered(o));
    if said(Outcome::Queued) {
        Forwarded::Queued
    } else if said(Outcome::Full) {
        Forwarded::Full
    } else {
        Forwarded::NotListening
    }
}

/// Offers Dials to the live peers of a [`ReplicaRegistry`].
#[derive(Debug)]
pub struct Forwarder {
    replicas: Arc<ReplicaRegistry>,
    keys: LiveKeys,
    tls: ClientTlsConfig,
    channels: Mutex<HashMap<String, Channel>>,
    metrics: Arc<PeerMetrics>,
}

impl Forwarder {
    /// Forwards to the peers of `replicas`, trusting `ca_pem` and expecting their
    /// certificates to name `server_name` (the host of `--grpc-endpoint`), with peer tokens
    /// signed by the internal key of `keys`.
    pub fn new(
        replicas: Arc<ReplicaRegistry>,
        keys: LiveKeys,
        ca_pem: &str,
        server_name: &str,
        metrics: Arc<PeerMetrics>,
    ) -> Forwarder {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name(server_name);
        Forwarder {
            replicas,
            keys,
            tls,
            channels: Mutex::default(),
            metrics,
        }
    }

    /// The channel's metrics (the service that receives offers counts there too).
    pub fn metrics(&self) -> &Arc<PeerMetrics> {
        &self.metrics
    }

    /// Offers `response` for the lease `lease_key` (`<namespace>/<lease>`) to every live
    /// peer at once and combines the answers with [`decide`].
    pub async fn offer(&self, lease_key: &str, response: &ListenResponse) -> Forwarded {
        let now = OffsetDateTime::now_utc();
        let peers = self.replicas.live_peers(now);
        if peers.is_empty() {
            self.metrics.forwarded("no_peers");
            return Forwarded::NotListening;
        }
        let keys = self.keys.current();
        let me = self.replicas.me().text();
        let token = match jumpstarter_token::peer::mint(
            &keys.issuer.key,
            &keys.issuer.issuer,
            &me,
            TOKEN_LIFETIME,
            now,
        ) {
            Ok(token) => token,
            Err(error) => {
                tracing::error!(%error, "cannot mint a peer token; the Dial is not forwarded");
                self.metrics.forwarded("not_listening");
                return Forwarded::NotListening;
            }
        };
        let calls = peers.iter().map(|peer| {
            let channel = self.channel(&peer.endpoint);
            let request = OfferRequest {
                lease: lease_key.to_owned(),
                router_endpoint: response.router_endpoint.clone(),
                router_token: response.router_token.clone(),
            };
            let token = &token;
            async move {
                let answer = match channel {
                    Some(channel) => ask(channel, request, token).await,
                    None => PeerAnswer::Failed("unreachable"),
                };
                if let PeerAnswer::Failed(reason) = answer {
                    self.metrics.call_failed(reason);
                    tracing::warn!(peer = %peer.id, endpoint = %peer.endpoint, reason, lease = %lease_key, "offering a Dial to a peer failed");
                }
                answer
            }
        });
        let answers = join_all(calls).await;
        self.forget_others(&peers);
        let forwarded = decide(&answers);
        self.metrics.forwarded(match forwarded {
            Forwarded::Queued => "queued",
            Forwarded::Full => "full",
            Forwarded::NotListening => "not_listening",
        });
        forwarded
    }

    /// The (lazily connecting) channel to `endpoint`, created at first use.
    fn channel(&self, endpoint: &str) -> Option<Channel> {
        let mut channels = self.lock();
        if let Some(channel) = channels.get(endpoint) {
            return Some(channel.clone());
        }
        let built = Endpoint::from_shared(format!("https://{endpoint}"))
            .and_then(|e| e.tls_config(self.tls.clone()))
            .map(|e| {
                e.connect_timeout(CONNECT_TIMEOUT)
                    .timeout(CALL_TIMEOUT)
                    .connect_lazy()
            });
        match built {
            Ok(channel) => {
                channels.insert(endpoint.to_owned(), channel.clone());
                Some(channel)
            }
            Err(error) => {
                tracing::warn!(%error, endpoint, "a peer's endpoint is not usable");
                None
            }
        }
    }

    /// Drops the channels of endpoints no longer among `peers`.
    fn forget_others(&self, peers: &[crate::replica::Peer]) {
        self.lock()
            .retain(|endpoint, _| peers.iter().any(|p| &p.endpoint == endpoint));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        // Each operation is one map insert or retain; a poisoned map is still whole.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One Offer call, bounded as a whole by connect + call timeouts.
async fn ask(channel: Channel, request: OfferRequest, token: &str) -> PeerAnswer {
    let mut request = Request::new(request);
    match format!("Bearer {token}").parse() {
        Ok(value) => {
            request.metadata_mut().insert("authorization", value);
        }
        Err(_) => return PeerAnswer::Failed("error"),
    }
    let mut client = PeerServiceClient::new(channel);
    let call = client.offer(request);
    match tokio::time::timeout(CONNECT_TIMEOUT + CALL_TIMEOUT, call).await {
        Err(_) => PeerAnswer::Failed("timeout"),
        Ok(Ok(response)) => match Outcome::try_from(response.into_inner().outcome) {
            Ok(outcome) => PeerAnswer::Answered(outcome),
            Err(_) => PeerAnswer::Failed("error"),
        },
        Ok(Err(status)) => PeerAnswer::Failed(match status.code() {
            Code::Unavailable => "unreachable",
            Code::DeadlineExceeded | Code::Cancelled => "timeout",
            Code::Unauthenticated | Code::PermissionDenied => "refused",
            _ => "error",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_beats_full_beats_not_listening() {
        use PeerAnswer::{Answered, Failed};
        let cases = [
            (vec![], Forwarded::NotListening),
            (vec![Failed("timeout")], Forwarded::NotListening),
            (
                vec![Answered(Outcome::NotListening), Failed("unreachable")],
                Forwarded::NotListening,
            ),
            (
                vec![Answered(Outcome::Full), Answered(Outcome::NotListening)],
                Forwarded::Full,
            ),
            (
                vec![
                    Answered(Outcome::Full),
                    Failed("refused"),
                    Answered(Outcome::Queued),
                ],
                Forwarded::Queued,
            ),
            (
                vec![Answered(Outcome::Unspecified)],
                Forwarded::NotListening,
            ),
        ];
        for (answers, expected) in cases {
            assert_eq!(decide(&answers), expected, "{answers:?}");
        }
    }
}

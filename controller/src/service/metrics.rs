//! Metrics of the gRPC services.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::{Code, Status};

use jumpstarter_shell::metrics_registrar::Registrar;

/// Labels of the RPC counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `<Service>/<Method>`, e.g. `ControllerService/Dial`.
    pub method: &'static str,
    /// gRPC code name as gRPC spells it, e.g. `OK`, `UNAVAILABLE`.
    pub code: &'static str,
}

/// The canonical gRPC name of `code` (`OK`, `INVALID_ARGUMENT`, ...).
pub(crate) fn grpc_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// RPC latency buckets: 0.5 ms to about 16 s (×2).
const RPC_BUCKETS: (f64, f64, u16) = (0.0005, 2.0, 16);

/// Labels of the Dial offer counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OfferLabels {
    /// `queued`, `not_listening` or `full`.
    pub outcome: &'static str,
}

/// Labels of the refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The limit that refused the call: `status_streams_per_exporter`,
    /// `pending_leases_per_client`, `dial_rate` or `rotate_token_rate`.
    pub limit: &'static str,
}

/// Labels of the exporter-status write counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What asked for the write: `report_status`, `status_open` (lastSeen at a stream's
    /// start), `status_close` (lastSeen at the end of a replica's last stream of the
    /// exporter), `stream_mark` or `stream_unmark` (the stream annotation).
    pub call: &'static str,
    /// `written`, or `unchanged` when nothing needed writing.
    pub outcome: &'static str,
}

/// Labels of the counter of object reads by the services.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    /// `Exporter`, `Lease` or `Client`.
    pub kind: &'static str,
    /// `cache` (the watch-fed copy answered) or `store` (the copy was not complete yet, or
    /// had no such object: the store was asked).
    pub source: &'static str,
}

/// Labels of the counter of errors of the read cache's watches.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchKindLabels {
    /// `Exporter`, `Lease` or `Client`.
    pub kind: &'static str,
}

/// Labels of the counter of labels refused at Register.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabelLabels {
    /// `reserved`, `not_allowed`, `selected`, `admin_set` or `invalid`.
    pub reason: &'static str,
}

/// Metrics of the services; registered once per process.
#[derive(Debug)]
pub struct ServiceMetrics {
    /// Seconds each RPC took (for streams: until the stream was opened), by method and
    /// code.
    pub rpc_duration: Family<RpcLabels, Histogram>,
    /// Open exporter Status streams.
    pub status_streams: Gauge,
    /// Open exporter Listen streams.
    pub listen_streams: Gauge,
    /// Finished RPCs (for streams: the outcome of opening them) by method and code.
    pub rpcs: Family<RpcLabels, Counter>,
    /// Dial offers to listen queues by outcome (the bounded queue's counter).
    pub listen_offers: Family<OfferLabels, Counter>,
    /// Dials that gave up waiting for an exporter to become ready.
    pub dial_wait_timeouts: Counter,
    /// Calls refused by a per-caller limit, by limit.
    pub limit_refusals: Family<LimitLabels, Counter>,
    /// Exporter status writes asked for by exporters' calls, by call and outcome.
    pub exporter_status_writes: Family<WriteLabels, Counter>,
    /// Errors of the watches that feed the read cache (they restart with backoff), by kind.
    pub cache_watch_errors: Family<WatchKindLabels, Counter>,
    /// Object reads (gets and lists) of the services, by kind and by who answered.
    pub reads: Family<ReadLabels, Counter>,
    /// Labels exporters reported at Register that were not applied, by reason.
    pub register_labels_refused: Family<RefusedLabelLabels, Counter>,
}

/// The RPC latency histograms, one per method and code.
fn rpc_histograms() -> Family<RpcLabels, Histogram> {
    Family::new_with_constructor(|| {
        let (start, factor, count) = RPC_BUCKETS;
        Histogram::new(exponential_buckets(start, factor, count))
    })
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        ServiceMetrics::new(&mut Registry::default())
    }
}

impl ServiceMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> ServiceMetrics {
        let mut r = Registrar::new(registry);
        ServiceMetrics {
            rpc_duration: r.with(
                "jumpstarter_controller_grpc_request_duration_seconds",
                "Time each gRPC call took (streams: until opened), by method and status code",
                rpc_histograms(),
            ),
            status_streams: r.add(
                "jumpstarter_controller_status_streams",
                "Open exporter Status streams",
            ),
            listen_streams: r.add(
                "jumpstarter_controller_listen_streams",
                "Open exporter Listen streams",
            ),
            rpcs: r.add(
                "jumpstarter_controller_grpc_requests",
                "gRPC calls by method and status code",
            ),
            listen_offers: r.add(
                "jumpstarter_controller_listen_offers",
                "Dial offers to exporter listen queues by outcome",
            ),
            dial_wait_timeouts: r.add(
                "jumpstarter_controller_dial_wait_timeouts",
                "Dials that timed out waiting for the exporter to become ready",
            ),
            limit_refusals: r.add(
                "jumpstarter_controller_limit_refusals",
                "Calls refused by a per-caller limit, by limit",
            ),
            exporter_status_writes: r.add(
                "jumpstarter_controller_exporter_status_writes",
                "Exporter status writes asked for by exporter calls, by call and outcome",
            ),
            cache_watch_errors: r.add(
                "jumpstarter_controller_read_cache_watch_errors",
                "Errors of the watches feeding the gRPC services' read cache, by kind",
            ),
            reads: r.add(
                "jumpstarter_controller_service_reads",
                "Object reads of the gRPC services by kind and source (cache or store)",
            ),
            register_labels_refused: r.add(
                "jumpstarter_controller_register_labels_refused",
                "Labels exporters reported at Register that were not applied, by reason",
            ),
        }
    }

    /// Counts one refusal by the limit `limit`.
    pub(crate) fn refused(&self, limit: &'static str) {
        self.limit_refusals
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// Counts one read of `kind` answered by `source` (`cache` or `store`).
    pub(crate) fn read(&self, kind: &'static str, source: &'static str) {
        self.reads.get_or_create(&ReadLabels { kind, source }).inc();
    }

    /// Counts one exporter-status write decision of `call`.
    pub(crate) fn status_write(&self, call: &'static str, wrote: bool) {
        let outcome = if wrote { "written" } else { "unchanged" };
        self.exporter_status_writes
            .get_or_create(&WriteLabels { call, outcome })
            .inc();
    }

    /// Counts one call's outcome and passes the result through.
    pub fn observe<T>(&self, method: &'static str, result: Result<T, Status>) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        self.rpcs
            .get_or_create(&RpcLabels {
                method,
                code: grpc_code_name(code),
            })
            .inc();
        result
    }

    /// [`ServiceMetrics::observe`], and the call's time since `started`.
    pub fn observe_timed<T>(
        &self,
        method: &'static str,
        started: std::time::Instant,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        self.rpc_duration
            .get_or_create(&RpcLabels {
                method,
                code: grpc_code_name(code),
            })
            .observe(started.elapsed().as_secs_f64());
        self.observe(method, result)
    }
}

/// Implements a tonic service trait over an API type with a `services` field: each listed
/// method runs its `*_inner` counterpart and counts the outcome under `"<Service>/<Method>"`
/// with [`ServiceMetrics::observe`]; streams are answered in the stream types given first.
///
/// ```ignore
/// observed_service! {
///     ControllerService for ControllerApi, "ControllerService";
///     type ListenStream = ResponseStream<pb::ListenResponse>;
///     "Register": register, register_inner(pb::RegisterRequest) -> pb::RegisterResponse;
/// }
/// ```
macro_rules! observed_service {
    (
        $service:ident for $api:ident, $prefix:literal;
        $(type $stream:ident = $stream_ty:ty;)*
        $($method_name:literal: $method:ident, $inner:ident($request:ty) -> $response:ty;)+
    ) => {
        #[tonic::async_trait]
        impl<S: $crate::store::Store> $service for $api<S> {
            $(type $stream = $stream_ty;)*

            $(
                async fn $method(
                    &self,
                    request: tonic::Request<$request>,
                ) -> Result<tonic::Response<$response>, tonic::Status> {
                    let started = std::time::Instant::now();
                    let result = self.$inner(request).await.map(tonic::Response::new);
                    self.services
                        .shared
                        .metrics
                        .observe_timed(concat!($prefix, "/", $method_name), started, result)
                }
            )+
        }
    };
}
pub(crate) use observed_service;

/// Decrements a gauge when dropped (one per open stream).
#[derive(Debug)]
pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub(crate) fn new(gauge: &Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

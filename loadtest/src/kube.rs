//! A real Kubernetes API server for scenario 7: the jumpstarter CRDs applied to it, a
//! fresh namespace per controller run (its objects deleted afterwards), and the server's
//! own count of the writes it served, from its `/metrics`. Needs permission to apply
//! CustomResourceDefinitions, create namespaces and read `/metrics` (the project's test
//! API server gives all three to its admin).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use jumpstarter_controller::crd::{Client, Exporter, Lease};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

/// An API server reached with a kubeconfig.
#[derive(Clone)]
pub(crate) struct KubeTarget {
    pub(crate) kubeconfig: PathBuf,
    pub(crate) client: kube::Client,
}

impl std::fmt::Debug for KubeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTarget")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl KubeTarget {
    /// Connects with `kubeconfig` and applies the jumpstarter CRDs (server-side apply,
    /// so an installed chart's CRDs are left as they are when identical).
    pub(crate) async fn connect(kubeconfig: &Path) -> anyhow::Result<KubeTarget> {
        let client = jumpstarter_shell::kube_client::connect(Some(kubeconfig)).await?;
        let target = KubeTarget {
            kubeconfig: kubeconfig.to_owned(),
            client,
        };
        jumpstarter_testenv::apply_crds(
            target.client.clone(),
            "jumpstarter-loadtest",
            &jumpstarter_controller::crd::definitions(),
        )
        .await?;
        Ok(target)
    }

    /// Creates namespace `name`.
    pub(crate) async fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.to_owned());
        api.create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(())
    }

    /// Deletes the objects a controller run leaves in namespace `name` (Leases, Exporters,
    /// Clients, Secrets, one collection call each) and asks for the namespace to be
    /// deleted. The bare test API server runs no namespace controller: without the first
    /// step, every run's thousands of objects would stay in its store and slow the runs
    /// after it.
    pub(crate) async fn delete_namespace(&self, name: &str) {
        let all = ListParams::default();
        let background = DeleteParams::background();
        let c = &self.client;
        let deleted = [
            Api::<Lease>::namespaced(c.clone(), name)
                .delete_collection(&background, &all)
                .await
                .map(drop),
            Api::<Exporter>::namespaced(c.clone(), name)
                .delete_collection(&background, &all)
                .await
                .map(drop),
            Api::<Client>::namespaced(c.clone(), name)
                .delete_collection(&background, &all)
                .await
                .map(drop),
            Api::<Secret>::namespaced(c.clone(), name)
                .delete_collection(&background, &all)
                .await
                .map(drop),
            Api::<Namespace>::all(c.clone())
                .delete(name, &background)
                .await
                .map(drop),
        ];
        for e in deleted.into_iter().filter_map(Result::err) {
            crate::progress::step(format!("cleaning up namespace {name}: {e}"));
        }
    }

    /// The writes (POST, PUT, PATCH, APPLY, DELETE, DELETECOLLECTION) the API server has
    /// served since it started, from `apiserver_request_total` on its `/metrics`. The
    /// count is the whole server's: anything else using it at the same time adds to it.
    pub(crate) async fn writes(&self) -> anyhow::Result<Writes> {
        let request = hyper::Request::get("/metrics")
            .body(Vec::new())
            .context("a /metrics request")?;
        let text = self
            .client
            .request_text(request)
            .await
            .context("reading the API server's /metrics")?;
        Writes::parse(&text)
    }
}

/// Write requests an API server served, in all and by verb and resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Writes {
    pub(crate) total: f64,
    /// `"<VERB> <resource>[/<subresource>]"` (group left out) → count.
    pub(crate) by: BTreeMap<String, f64>,
}

/// The verbs of `apiserver_request_total` that change the store.
const WRITE_VERBS: &[&str] = &[
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

impl Writes {
    /// The writes counted in a Prometheus text exposition.
    fn parse(text: &str) -> anyhow::Result<Writes> {
        let mut writes = Writes::default();
        let mut seen = false;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            seen = true;
            let Some((labels, value)) = rest.rsplit_once('}') else {
                continue;
            };
            let label = |key: &str| {
                labels.split(',').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == key).then(|| v.trim_matches('"'))
                })
            };
            let verb = label("verb").unwrap_or_default();
            if !WRITE_VERBS.contains(&verb) {
                continue;
            }
            let count: f64 = value
                .trim()
                .parse()
                .with_context(|| format!("apiserver_request_total value in {line:?}"))?;
            let mut resource = label("resource").unwrap_or_default().to_owned();
            if let Some(sub) = label("subresource").filter(|s| !s.is_empty()) {
                resource = format!("{resource}/{sub}");
            }
            writes.total += count;
            *writes.by.entry(format!("{verb} {resource}")).or_default() += count;
        }
        anyhow::ensure!(
            seen,
            "no apiserver_request_total in the API server's metrics"
        );
        Ok(writes)
    }

    /// The writes from `earlier` to `self`, largest first.
    pub(crate) fn since(&self, earlier: &Writes) -> (f64, Vec<(String, f64)>) {
        let mut by: Vec<(String, f64)> = self
            .by
            .iter()
            .map(|(k, v)| (k.clone(), v - earlier.by.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        by.sort_by(|a, b| b.1.total_cmp(&a.1));
        (self.total - earlier.total, by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 8
apiserver_request_total{code="200",component="apiserver",dry_run="",group="jumpstarter.dev",resource="exporters",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 5
apiserver_request_total{code="201",component="apiserver",dry_run="",group="jumpstarter.dev",resource="leases",scope="resource",subresource="",verb="POST",version="v1alpha1"} 3
apiserver_request_total{code="409",component="apiserver",dry_run="",group="jumpstarter.dev",resource="leases",scope="resource",subresource="",verb="POST",version="v1alpha1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="namespaces",scope="resource",subresource="",verb="GET",version="v1"} 14
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 2
"#;

    #[test]
    fn only_write_verbs_count() {
        let writes = Writes::parse(METRICS).expect("parse");
        assert_eq!(writes.total, 17.0);
        assert_eq!(writes.by["POST leases"], 4.0);
        assert_eq!(writes.by["PATCH exporters/status"], 5.0);
        assert_eq!(writes.by["PUT leases"], 8.0);
        assert_eq!(writes.by.len(), 3);
    }

    #[test]
    fn differences_are_sorted_largest_first() {
        let before = Writes::parse(METRICS).expect("parse");
        let mut after = before.clone();
        after.total += 7.0;
        *after.by.get_mut("PUT leases").expect("present") += 2.0;
        after.by.insert("DELETE secrets".to_owned(), 5.0);
        let (total, by) = after.since(&before);
        assert_eq!(total, 7.0);
        assert_eq!(
            by,
            [
                ("DELETE secrets".to_owned(), 5.0),
                ("PUT leases".to_owned(), 2.0)
            ]
        );
    }

    #[test]
    fn metrics_without_the_counter_are_refused() {
        assert!(Writes::parse("# nothing here\n").is_err());
    }
}

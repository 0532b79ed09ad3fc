//! Kubernetes service-account tokens through a JWT authenticator for the cluster issuer (the
//! 0.9.0 Helm example: username claim `sub`, prefix `kubernetes:`), against the real
//! kube-apiserver: its discovery document and key set, a TokenRequest token.
//!
//! The apiserver serves discovery only to callers allowed by the ClusterRole
//! `system:service-account-issuer-discovery`; fetching it without credentials (as 0.9.0
//! does too) needs that role bound to `system:unauthenticated`, which the test does.

use jumpstarter_controller::jwt::{Authenticators, JwtMetrics, JwtOptions, parse_authenticators};
use jumpstarter_testenv::TestEnv;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::json;
use time::OffsetDateTime;

/// Removes the test's ClusterRoleBinding, also when the test fails.
struct BindingGuard {
    name: String,
}

impl Drop for BindingGuard {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await, and the test's client lives on the test's (blocked) runtime:
        // a thread with its own runtime and its own client removes the binding.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let api: Api<ClusterRoleBinding> = Api::all(TestEnv::shared().admin_client().await);
                let params = DeleteParams::default();
                let delete = api.delete(&name, &params);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), delete).await;
            });
        })
        .join();
    }
}

#[tokio::test]
async fn a_service_account_token_maps_to_its_kubernetes_username() {
    let env = TestEnv::shared();
    let client = env.admin_client().await;
    let namespace = env.namespace("jwt-sa").await;

    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding_name = format!("{namespace}-issuer-discovery");
    bindings
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(binding_name.clone()),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: "system:service-account-issuer-discovery".into(),
                },
                subjects: Some(vec![Subject {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Group".into(),
                    name: "system:unauthenticated".into(),
                    namespace: None,
                }]),
            },
        )
        .await
        .expect("bind issuer discovery for unauthenticated callers");
    let _guard = BindingGuard { name: binding_name };

    let accounts: Api<ServiceAccount> = Api::namespaced(client, &namespace);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("exporter-sa".into()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .expect("create service account");
    let request = accounts
        .create_token_request(
            "exporter-sa",
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec!["jumpstarter".into()],
                    expiration_seconds: Some(600),
                    ..TokenRequestSpec::default()
                },
                ..TokenRequest::default()
            },
        )
        .await
        .expect("token request");
    let token = request.status.expect("token status").token;

    let issuer = format!("https://127.0.0.1:{}", env.api_port);
    let config = json!({
        "issuer": {
            "url": issuer,
            "audiences": ["jumpstarter"],
            "certificateAuthority": env.dir.join("pki/ca.crt").display().to_string(),
        },
        "claimMappings": {"username": {"claim": "sub", "prefix": "kubernetes:"}},
    });
    let configs = parse_authenticators(&[config]).expect("valid configuration");
    let authenticators =
        Authenticators::new(configs, JwtOptions::default(), &JwtMetrics::default())
            .expect("authenticators");
    let identity = authenticators
        .authenticate(&token, OffsetDateTime::now_utc())
        .await
        .expect("service-account token accepted")
        .expect("cluster issuer configured");
    assert_eq!(
        identity.username,
        format!("kubernetes:system:serviceaccount:{namespace}:exporter-sa")
    );

    // A token for another audience is refused with go-oidc's text.
    let other = accounts
        .create_token_request(
            "exporter-sa",
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec!["https://kubernetes.default.svc".into()],
                    expiration_seconds: Some(600),
                    ..TokenRequestSpec::default()
                },
                ..TokenRequest::default()
            },
        )
        .await
        .expect("token request")
        .status
        .expect("token status")
        .token;
    let error = authenticators
        .authenticate(&other, OffsetDateTime::now_utc())
        .await
        .expect_err("wrong audience");
    assert_eq!(
        error.to_string(),
        r#"oidc: verify token: oidc: expected audience "jumpstarter" got ["https://kubernetes.default.svc"]"#
    );
}

//! The admin API client the CLI uses in standalone mode.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use jumpstarter_controller::admin::{
    Applied, ClientConfig, ExporterConfig, Kind, LeaseOrder, Objects,
};
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::{ApplyRequest, CreateRequest, ErrorBody, NAMESPACE_HEADER};

/// Why a call to the service failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error(
        "the service is not running: start it with `jumpstarter serve --data-dir {}` (nothing answers on {})",
        data_dir.display(),
        socket.display()
    )]
    NotRunning { data_dir: PathBuf, socket: PathBuf },
    #[error("cannot connect to the service's admin socket {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to the service on {}: {message}", socket.display())]
    Transport { socket: PathBuf, message: String },
    /// The object the request is about does not exist (404); the service's message.
    #[error("{0}")]
    NotFound(String),
    /// The service refused or failed the request; its message.
    #[error("{0}")]
    Service(String),
    #[error("unexpected answer from the service: {0}")]
    Decode(String),
}

/// A client of one service's admin socket.
#[derive(Debug, Clone)]
pub(crate) struct AdminClient {
    socket: PathBuf,
    data_dir: PathBuf,
    namespace: Option<String>,
}

impl AdminClient {
    /// A client of the service whose data directory is `data_dir`; requests name
    /// `namespace` when given (the service refuses a namespace it does not serve).
    pub(crate) fn new(data_dir: &Path, socket: PathBuf, namespace: Option<String>) -> AdminClient {
        AdminClient {
            socket,
            data_dir: data_dir.to_owned(),
            namespace,
        }
    }

    pub(crate) async fn create_client(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        username: Option<&str>,
    ) -> Result<ClientConfig, ClientError> {
        self.create(Kind::Client, name, labels, username).await
    }

    pub(crate) async fn create_exporter(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        username: Option<&str>,
    ) -> Result<ExporterConfig, ClientError> {
        self.create(Kind::Exporter, name, labels, username).await
    }

    pub(crate) async fn create_lease(&self, order: &LeaseOrder) -> Result<Objects, ClientError> {
        let body = serde_json::to_vec(order).map_err(|e| ClientError::Decode(e.to_string()))?;
        let path = format!("/v1/{}", Kind::Lease.plural());
        decode(self.call(Method::POST, &path, Some(body)).await?)
    }

    /// Applies the YAML text `manifest`; the service checks it.
    pub(crate) async fn apply(&self, manifest: &str) -> Result<Vec<Applied>, ClientError> {
        let request = ApplyRequest {
            manifest: manifest.to_owned(),
        };
        let body = serde_json::to_vec(&request).map_err(|e| ClientError::Decode(e.to_string()))?;
        decode(self.call(Method::POST, "/v1/apply", Some(body)).await?)
    }

    pub(crate) async fn get(&self, kind: Kind, name: &str) -> Result<Objects, ClientError> {
        let path = format!("/v1/{}/{name}", kind.plural());
        decode(self.call(Method::GET, &path, None).await?)
    }

    pub(crate) async fn list(&self, kind: Kind) -> Result<Objects, ClientError> {
        let path = format!("/v1/{}", kind.plural());
        decode(self.call(Method::GET, &path, None).await?)
    }

    pub(crate) async fn delete(&self, kind: Kind, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/{}/{name}", kind.plural());
        self.call(Method::DELETE, &path, None).await?;
        Ok(())
    }

    async fn create<T: DeserializeOwned>(
        &self,
        kind: Kind,
        name: &str,
        labels: &BTreeMap<String, String>,
        username: Option<&str>,
    ) -> Result<T, ClientError> {
        let request = CreateRequest {
            username: username.map(str::to_owned),
            name: name.to_owned(),
            labels: labels.clone(),
        };
        let body = serde_json::to_vec(&request).map_err(|e| ClientError::Decode(e.to_string()))?;
        let path = format!("/v1/{}", kind.plural());
        decode(self.call(Method::POST, &path, Some(body)).await?)
    }

    /// One request on a fresh connection; the body of a 2xx answer, else the service's
    /// error message.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| match source.kind() {
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                        ClientError::NotRunning {
                            data_dir: self.data_dir.clone(),
                            socket: self.socket.clone(),
                        }
                    }
                    _ => ClientError::Connect {
                        socket: self.socket.clone(),
                        source,
                    },
                })?;
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport {
            socket: self.socket.clone(),
            message: e.to_string(),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(&e))?;
        let driver = tokio::spawn(connection);

        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(namespace) = &self.namespace {
            request = request.header(NAMESPACE_HEADER, namespace);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| transport(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(&e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        driver.abort();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = error_message(status, &bytes);
        Err(if status == StatusCode::NOT_FOUND {
            ClientError::NotFound(message)
        } else {
            ClientError::Service(message)
        })
    }
}

fn decode<T: DeserializeOwned>(bytes: Bytes) -> Result<T, ClientError> {
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
}

fn error_message(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => error,
        Err(_) => format!(
            "the service answered {status}: {}",
            String::from_utf8_lossy(body).trim()
        ),
    }
}

//! The HTTP server on `metrics.listen`: `/metrics` (Prometheus text format), `/healthz`
//! (liveness), `/readyz` (readiness, with the reasons when not ready) and `/startupz` (200 as
//! soon as the sidecar serves: the Helm chart's default readiness probe, so that an outage of
//! Kafka never takes the application of the pod out of its Services).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Health, Metrics, MetricsConfig};

/// The metrics address cannot be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {listen}")]
pub(crate) struct ListenError {
    listen: String,
    #[source]
    source: std::io::Error,
}

/// Listens on `metrics.listen` (unless it is turned off) and serves until the task is
/// aborted.
pub(crate) async fn start(
    config: &MetricsConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<Option<JoinHandle<std::io::Result<()>>>, ListenError> {
    let Some(listen) = &config.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ListenError {
            listen: listen.clone(),
            source,
        })?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| listen.clone());
    tracing::info!(listen = %bound, "serving /metrics, /healthz, /readyz and /startupz");
    Ok(Some(tokio::spawn(serve(
        listener,
        metrics,
        health,
        config.stall_timeout,
    ))))
}

/// Serves `/metrics`, `/healthz`, `/readyz` and `/startupz` until the task is dropped.
async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stall: Duration,
) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;

    let m = Arc::clone(&metrics);
    let live = Arc::clone(&health);
    let ready = health;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = Arc::clone(&m);
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let h = Arc::clone(&live);
                async move {
                    match h.liveness(stall) {
                        Ok(()) => (StatusCode::OK, "ok\n".to_string()).into_response(),
                        Err(why) => {
                            (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
                        }
                    }
                }
            }),
        )
        .route("/startupz", get(|| async { (StatusCode::OK, "started\n") }))
        .route(
            "/readyz",
            get(move || {
                let h = Arc::clone(&ready);
                async move {
                    match h.readiness() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready:\n{}\n", why.join("\n")),
                        )
                            .into_response(),
                    }
                }
            }),
        );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The status code of `GET path` on `addr`.
    async fn status(addr: std::net::SocketAddr, path: &str) -> u16 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        resp.split(' ').nth(1).unwrap().parse().unwrap()
    }

    /// A pod's readiness probe on `/startupz` (the chart's default) keeps the application in
    /// service while Kafka is down: it answers 200 once the sidecar serves, whatever `/readyz`
    /// says.
    #[tokio::test]
    async fn startupz_is_ok_once_serving_while_readyz_reports_kafka() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Health::new();
        health.set("kafka", vec!["kafka: no broker reachable".into()]);
        let server = tokio::spawn(serve(
            listener,
            Metrics::new(),
            Arc::clone(&health),
            Duration::from_secs(60),
        ));
        assert_eq!(status(addr, "/readyz").await, 503);
        assert_eq!(status(addr, "/startupz").await, 200);
        assert_eq!(status(addr, "/healthz").await, 200);
        server.abort();
    }
}

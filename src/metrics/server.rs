//! The HTTP server on `metrics.listen`: `/metrics` (Prometheus text format), `/healthz`
//! (liveness), `/readyz` (readiness, with the reasons when not ready) and `/startupz` (200 as
//! soon as the sidecar serves: the Helm chart's default readiness probe, so that an outage of
//! Kafka never takes the application of the pod out of its Services).
//!
//! Readiness is computed when it is asked for: each `/readyz` and each scrape of `/metrics`
//! asks the outputs and sets `auditrail_ready`, so the gauge is right at scrape time and
//! nothing ticks while nobody asks (issue 16).

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
    let scraped = Arc::clone(&health);
    let live = Arc::clone(&health);
    let ready = health;
    let ready_metrics = metrics;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = Arc::clone(&m);
                let h = Arc::clone(&scraped);
                async move {
                    // Only the gauge is wanted here: the scrape carries it.
                    let _ = publish_readiness(&h, &m);
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
                let m = Arc::clone(&ready_metrics);
                async move {
                    match publish_readiness(&h, &m) {
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

/// Readiness now, also set on `auditrail_ready` (1 ready, 0 not).
fn publish_readiness(health: &Health, metrics: &Metrics) -> Result<(), Vec<String>> {
    let readiness = health.readiness();
    metrics.process.ready.set(i64::from(readiness.is_ok()));
    readiness
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The status code and the whole response of `GET path` on `addr`.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        (resp.split(' ').nth(1).unwrap().parse().unwrap(), resp)
    }

    /// The status code of `GET path` on `addr`.
    async fn status(addr: std::net::SocketAddr, path: &str) -> u16 {
        get(addr, path).await.0
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

    /// Issue 16: with no readiness tick, `/readyz` and the `auditrail_ready` gauge of a scrape
    /// follow an output's health as it is when asked: 503 with its reason and 0 while it is not
    /// ready, 200 and 1 as soon as it is.
    #[tokio::test]
    async fn readyz_and_the_ready_gauge_follow_an_output_when_asked() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Health::new();
        let down = Arc::new(AtomicBool::new(true));
        let probe = Arc::clone(&down);
        health.ask("kafka", move || {
            if probe.load(Ordering::Relaxed) {
                vec!["kafka: no broker reachable".into()]
            } else {
                Vec::new()
            }
        });
        let server = tokio::spawn(serve(
            listener,
            Metrics::new(),
            Arc::clone(&health),
            Duration::from_secs(60),
        ));
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("kafka: no broker reachable"), "{body}");
        let (_, scrape) = get(addr, "/metrics").await;
        assert!(scrape.contains("\nauditrail_ready 0\n"), "{scrape}");

        down.store(false, Ordering::Relaxed);
        let (_, scrape) = get(addr, "/metrics").await;
        assert!(scrape.contains("\nauditrail_ready 1\n"), "{scrape}");
        assert_eq!(status(addr, "/readyz").await, 200);
        down.store(true, Ordering::Relaxed);
        assert_eq!(status(addr, "/readyz").await, 503);
        server.abort();
    }
}

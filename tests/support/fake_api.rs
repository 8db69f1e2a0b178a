//! A stand-in for a Kubernetes API server: there is no cluster on the machines that run these
//! tests, so this local HTTP server speaks the few endpoints auditrail uses, over real HTTP,
//! in the exact shapes of the Kubernetes API, to the real `kube` client in the real binary:
//!
//! - `GET /api/v1/namespaces/{ns}/pods/{name}`: the pod;
//! - `GET /api/v1/namespaces/{ns}/pods?watch=true&fieldSelector=metadata.name={name}`: a watch
//!   stream of `{"type":"MODIFIED","object":…}` lines;
//! - `GET /api/v1/namespaces/{ns}/pods/{name}/log?follow=true&timestamps=true&sinceTime=…`:
//!   the container's log as `<RFC3339Nano> <text>` lines, from `sinceTime` (whole seconds, as
//!   the API server does), following appended lines until the test cuts the connection.

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::header;
use axum::routing::get;
use serde_json::{json, Value};

#[derive(Default)]
struct Shared {
    pod: Value,
    /// (RFC3339Nano timestamp, text) of every log line the "kubelet" still serves.
    log: Vec<(String, String)>,
    /// Bumped to end every open log stream (an API server restart).
    generation: u64,
    /// Bumped on every pod change, for watchers.
    pod_version: u64,
    log_requests: Vec<String>,
}

/// The running stand-in; stopped when dropped.
pub struct FakeApi {
    shared: Arc<Mutex<Shared>>,
    pub address: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl FakeApi {
    /// Starts serving `pod` (a Pod object as JSON).
    pub fn start(pod: Value) -> FakeApi {
        let shared = Arc::new(Mutex::new(Shared {
            pod,
            ..Shared::default()
        }));
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::clone(&shared);
        runtime.spawn(async move {
            let app = axum::Router::new()
                .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
                .route("/api/v1/namespaces/{ns}/pods", get(watch_pods))
                .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
                .with_state(state);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        FakeApi {
            shared,
            address,
            runtime: Some(runtime),
        }
    }

    /// Writes a kubeconfig pointing at this server into `dir`; returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://{}\"}}\nusers:\n- name: u\n  user: {{token: test}}\ncontexts:\n- name: c\n  context: {{cluster: fake, user: u, namespace: shop}}\ncurrent-context: c\n",
                self.address
            ),
        )
        .unwrap();
        path
    }

    /// Changes the pod; open watches see a MODIFIED event.
    pub fn update_pod(&self, f: impl FnOnce(&mut Value)) {
        let mut s = self.shared.lock().unwrap();
        f(&mut s.pod);
        s.pod_version += 1;
        let v = s.pod_version.to_string();
        s.pod["metadata"]["resourceVersion"] = json!(v);
    }

    /// Appends a log line.
    pub fn log(&self, timestamp: &str, text: &str) {
        self.shared
            .lock()
            .unwrap()
            .log
            .push((timestamp.to_owned(), text.to_owned()));
    }

    /// Drops every line before `timestamp` (the kubelet rotated them away).
    pub fn rotate_before(&self, timestamp: &str) {
        self.shared
            .lock()
            .unwrap()
            .log
            .retain(|(t, _)| t.as_str() >= timestamp);
    }

    /// Ends every open log stream mid-way, as an API server restart does.
    pub fn disconnect(&self) {
        self.shared.lock().unwrap().generation += 1;
    }

    /// The query strings of the log requests received so far.
    pub fn log_requests(&self) -> Vec<String> {
        self.shared.lock().unwrap().log_requests.clone()
    }
}

type Shared_ = Arc<Mutex<Shared>>;

async fn get_pod(
    State(s): State<Shared_>,
    UrlPath((_ns, _name)): UrlPath<(String, String)>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let body = s.lock().unwrap().pod.to_string();
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// A query string as pairs, percent-decoded.
fn query_pairs(raw: Option<String>) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
                if let Ok(b) = u8::from_str_radix(&s[i + 1..(i + 3).min(s.len())], 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    raw.unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// A watch: one MODIFIED event per pod change, as JSON lines.
async fn watch_pods(State(s): State<Shared_>, UrlPath(_ns): UrlPath<String>) -> Body {
    let start = s.lock().unwrap().pod_version;
    let stream = futures_util::stream::unfold((s, start), |(s, mut seen)| async move {
        loop {
            let event = {
                let g = s.lock().unwrap();
                (g.pod_version != seen).then(|| (g.pod_version, g.pod.clone()))
            };
            if let Some((version, pod)) = event {
                seen = version;
                let line = format!("{}\n", json!({"type": "MODIFIED", "object": pod}));
                return Some((Ok::<_, std::io::Error>(Bytes::from(line)), (s, seen)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    Body::from_stream(stream)
}

/// The log, from `sinceTime` (whole seconds), then following until a disconnect.
async fn pod_log(
    State(s): State<Shared_>,
    UrlPath((_ns, _name)): UrlPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Body {
    let q = query_pairs(raw);
    let since = q.get("sinceTime").cloned();
    let generation = {
        let mut g = s.lock().unwrap();
        g.log_requests.push(serde_json::to_string(&q).unwrap());
        g.generation
    };
    // RFC 3339 with whole seconds compares as text with the lines' prefixes of 19 characters.
    let since_key = since.map(|t| t.chars().take(19).collect::<String>());
    let stream = futures_util::stream::unfold(
        (s, 0usize, since_key, generation),
        |(s, mut next, since, generation)| async move {
            loop {
                let line = {
                    let g = s.lock().unwrap();
                    if g.generation != generation {
                        return None;
                    }
                    let mut found = None;
                    while next < g.log.len() {
                        let (t, text) = &g.log[next];
                        next += 1;
                        if since
                            .as_ref()
                            .is_none_or(|since| &t[..19] >= since.as_str())
                        {
                            found = Some(format!("{t} {text}\n"));
                            break;
                        }
                    }
                    found
                };
                if let Some(line) = line {
                    return Some((
                        Ok::<_, std::io::Error>(Bytes::from(line)),
                        (s, next, since, generation),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    );
    Body::from_stream(stream)
}

/// A pod object in the API's shape.
pub fn pod(labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "api-7d9f8c6b5-x2x4q",
            "namespace": "shop",
            "uid": "0b1c2d3e-1111-2222-3333-444455556666",
            "resourceVersion": "1",
            "labels": labels,
            "annotations": {"team": "payments"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f8c6b5",
                "uid": "9f9f9f9f-1111-2222-3333-444455556666", "controller": true
            }]
        },
        "spec": {"nodeName": "node-7", "containers": [{"name": "app", "image": "shop"}, {"name": "auditrail", "image": "auditrail"}]},
        "status": {"podIP": "10.1.2.3", "phase": "Running"}
    })
}

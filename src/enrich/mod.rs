//! Enrich: pod metadata on every record, built once and spliced into each envelope.
//!
//! The `kubernetes` object of an envelope holds `namespace`, `pod`, `pod_uid`, `node`,
//! `container`, `pod_ip`, `labels`, selected `annotations`, the owning workload (`owner`:
//! kind and name, a ReplicaSet resolved to its Deployment) and an optional static `cluster`.
//! It comes from (`enrich.kubernetes`):
//! - `downward`: the Downward API: environment variables `POD_NAME`, `POD_NAMESPACE`,
//!   `POD_UID`, `NODE_NAME`, `POD_IP`, and the files `labels` and `annotations` of a
//!   Downward API volume (re-read when they change, no restart);
//! - `api`: the pod itself read from the Kubernetes API (get, then watch; never a request per
//!   record), which adds owner references and anything the Downward API cannot give;
//! - `auto` (default): the Downward API where present, the API for the rest when reachable,
//!   and a warning (never a crash) when neither is;
//! - `off`.
//!
//! For files under `/var/log/pods/<namespace>_<pod>_<uid>/<container>/`, the path tells the
//! namespace, pod, uid and container too: they are used, and a disagreement with the other
//! sources is logged. The metadata is serialised once per (stream, version) and spliced into
//! each envelope as text: enrichment costs no lookup per record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problem::Problem;

pub(crate) mod api;
mod downward;
mod path;

pub(crate) use downward::{downward, follow_downward, ENV_POD_NAME, ENV_POD_NAMESPACE};
use path::from_path;

/// `enrich.kubernetes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Auto,
    Downward,
    Api,
    Off,
}

/// Which label or annotation keys are copied: `all`, `none`, or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Keys {
    Named(KeysWord),
    List(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeysWord {
    All,
    None,
}

impl Keys {
    fn select(&self, map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        match self {
            Keys::Named(KeysWord::All) => map.clone(),
            Keys::Named(KeysWord::None) => BTreeMap::new(),
            Keys::List(keys) => map
                .iter()
                .filter(|(k, _)| keys.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// The `enrich` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    pub kubernetes: Mode,
    /// Where the Downward API volume with `labels` and `annotations` is mounted.
    pub podinfo_dir: PathBuf,
    /// A static cluster name added to every record.
    pub cluster: Option<String>,
    /// Label keys copied (`all` by default: labels are few and short).
    pub labels: Keys,
    /// Annotation keys copied (`none` by default: annotations can be large).
    pub annotations: Keys,
    /// How often the Downward API files are read again.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            kubernetes: Mode::Auto,
            podinfo_dir: PathBuf::from("/etc/podinfo"),
            cluster: None,
            labels: Keys::Named(KeysWord::All),
            annotations: Keys::Named(KeysWord::None),
            refresh_interval: Duration::from_secs(5),
        }
    }
}

impl EnrichConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if self.refresh_interval < Duration::from_millis(100) {
            problems.push(Problem::new(
                format!("{path}.refresh_interval"),
                "must be at least 100ms",
            ));
        }
        if let Some(c) = &self.cluster {
            if c.trim().is_empty() {
                problems.push(Problem::new(format!("{path}.cluster"), "must not be empty"));
            }
        }
    }
}

/// The owning workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub kind: String,
    pub name: String,
}

/// What is known about the pod, from every source, before selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PodInfo {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub node: Option<String>,
    pub pod_ip: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub owner: Option<Owner>,
}

impl PodInfo {
    fn is_empty(&self) -> bool {
        self == &PodInfo::default()
    }

    /// Fills what `self` lacks from `other`.
    fn fill_from(&mut self, other: &PodInfo) {
        fn fill(a: &mut Option<String>, b: &Option<String>) {
            if a.is_none() {
                a.clone_from(b);
            }
        }
        fill(&mut self.namespace, &other.namespace);
        fill(&mut self.pod, &other.pod);
        fill(&mut self.pod_uid, &other.pod_uid);
        fill(&mut self.node, &other.node);
        fill(&mut self.pod_ip, &other.pod_ip);
        if self.labels.is_empty() {
            self.labels.clone_from(&other.labels);
        }
        if self.annotations.is_empty() {
            self.annotations.clone_from(&other.annotations);
        }
        if self.owner.is_none() {
            self.owner.clone_from(&other.owner);
        }
    }
}

/// The `kubernetes` object as written into envelopes.
#[derive(Debug, Serialize)]
struct KubernetesObject<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
    namespace: Option<&'a str>,
    pod: Option<&'a str>,
    pod_uid: Option<&'a str>,
    node: Option<&'a str>,
    container: Option<&'a str>,
    pod_ip: Option<&'a str>,
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    owner: Option<&'a Owner>,
}

// === the shared state ===

/// The pod metadata in force; sources read it per stream and cache its serialisation by
/// `version`.
#[derive(Debug)]
pub(crate) struct Enrichment {
    config: RwLock<EnrichConfig>,
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    version: u64,
    downward: PodInfo,
    api: PodInfo,
}

/// The serialised `kubernetes` object for one stream, and the pod uid.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamMeta {
    pub version: u64,
    pub json: Option<Arc<str>>,
    pub pod_uid: Option<Arc<str>>,
}

impl Enrichment {
    pub(crate) fn new(config: EnrichConfig) -> Arc<Enrichment> {
        Arc::new(Enrichment {
            config: RwLock::new(config),
            state: RwLock::new(State::default()),
        })
    }

    pub(crate) fn config(&self) -> EnrichConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A reload: what is selected (labels, annotations, cluster) changes for the next records.
    pub(crate) fn set_config(&self, config: EnrichConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .version += 1;
    }

    /// Changes whenever the metadata does.
    pub(crate) fn version(&self) -> u64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).version
    }

    /// Replaces what the Downward API says; returns whether it changed.
    pub(crate) fn set_downward(&self, info: PodInfo) -> bool {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.downward == info {
            return false;
        }
        s.downward = info;
        s.version += 1;
        true
    }

    /// Replaces what the API says; returns whether it changed.
    pub(crate) fn set_api(&self, info: PodInfo) -> bool {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.api == info {
            return false;
        }
        s.api = info;
        s.version += 1;
        true
    }

    /// The metadata for a stream read from `path` (for a file source) or of `container`
    /// (for the API source): Downward API first, then the API, then the path.
    pub(crate) fn for_stream(&self, path: Option<&Path>, container: Option<&str>) -> StreamMeta {
        let config = self.config();
        if config.kubernetes == Mode::Off {
            return StreamMeta::default();
        }
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut info = s.downward.clone();
        info.fill_from(&s.api);
        let (from_path, path_container) = path.map(from_path).unwrap_or_default();
        for (field, a, b) in [
            ("namespace", &info.namespace, &from_path.namespace),
            ("pod", &info.pod, &from_path.pod),
            ("pod_uid", &info.pod_uid, &from_path.pod_uid),
        ] {
            if let (Some(a), Some(b)) = (a, b) {
                if a != b {
                    tracing::warn!(field, metadata = %a, path = %b, "the log path and the pod metadata disagree; using the path");
                }
            }
        }
        // The path is the truth about whose log this is.
        let mut merged = from_path.clone();
        merged.fill_from(&info);
        if merged.is_empty() && path_container.is_none() && container.is_none() {
            return StreamMeta {
                version: s.version,
                ..StreamMeta::default()
            };
        }
        let container = container.map(str::to_owned).or(path_container);
        let object = KubernetesObject {
            cluster: config.cluster.as_deref(),
            namespace: merged.namespace.as_deref(),
            pod: merged.pod.as_deref(),
            pod_uid: merged.pod_uid.as_deref(),
            node: merged.node.as_deref(),
            container: container.as_deref(),
            pod_ip: merged.pod_ip.as_deref(),
            labels: config.labels.select(&merged.labels),
            annotations: config.annotations.select(&merged.annotations),
            owner: merged.owner.as_ref(),
        };
        StreamMeta {
            version: s.version,
            json: serde_json::to_string(&object).ok().map(Arc::from),
            pod_uid: merged.pod_uid.as_deref().map(Arc::from),
        }
    }

    /// Whether any metadata at all is known (for the startup warning).
    pub(crate) fn is_known(&self) -> bool {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        !s.downward.is_empty() || !s.api.is_empty()
    }
}

// === start ===

/// Enrichment as `run` starts it: the shared state, the Kubernetes API client (also used by
/// `source.kind: kubernetes`), and the tasks that keep the metadata current.
pub(crate) struct Enricher {
    pub enrichment: Arc<Enrichment>,
    pub client: Option<kube::Client>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Enricher {
    /// Stops following the pod's metadata.
    pub(crate) fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// How long `start` waits for the API's first answer about the pod.
const API_WAIT: Duration = Duration::from_secs(5);

/// Waits (at most `limit`) until the API has said something about the pod, so that the
/// sources, started next, do not ship their first records without the pod's uid and labels
/// when the API is merely slow to answer (found under load: a restart's first records went
/// out with `kubernetes.pod_uid` missing). Startup only; after `limit` the records go without
/// and the metadata is filled in when it comes.
async fn wait_for_api(enrichment: &Enrichment, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while enrichment
        .state
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .api
        .is_empty()
    {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(waited = ?limit, "no answer from the Kubernetes API about this pod yet: the first records may lack its metadata");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts following the pod's metadata as `enrich.kubernetes` asks: the Downward API, the
/// Kubernetes API (when a client can be built: in a cluster, or with a kubeconfig), or both.
/// `needs_client`: another part (the Kubernetes log source) needs the API client whatever the
/// mode. Outside Kubernetes this warns once and records carry no `kubernetes` object.
/// With the API, it waits (at most [`API_WAIT`]) for the API's first answer about the pod.
pub(crate) async fn start(config: &EnrichConfig, needs_client: bool) -> Enricher {
    let enrichment = Enrichment::new(config.clone());
    let mode = config.kubernetes;
    let mut tasks = Vec::new();
    let env = |name: &str| std::env::var(name).ok();
    if matches!(mode, Mode::Auto | Mode::Downward) {
        enrichment.set_downward(downward(&env, &config.podinfo_dir));
        tasks.push(tokio::spawn(follow_downward(Arc::clone(&enrichment))));
    }
    let uses_api = matches!(mode, Mode::Auto | Mode::Api);
    let client = if uses_api || needs_client {
        match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(e) if mode == Mode::Api || needs_client => {
                tracing::warn!(error = %e, "no Kubernetes API client (not in a cluster, no kubeconfig)");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "no Kubernetes API client; using the Downward API only");
                None
            }
        }
    } else {
        None
    };
    if let (Some(client), true) = (&client, uses_api) {
        match api::own_pod(client, &env) {
            Some((namespace, name)) => {
                tasks.push(tokio::spawn(api::follow_pod(
                    client.clone(),
                    namespace,
                    name,
                    Arc::clone(&enrichment),
                )));
                wait_for_api(&enrichment, API_WAIT).await;
            }
            None => tracing::warn!(
                "cannot tell which pod this is (set POD_NAME through the Downward API)"
            ),
        }
    }
    if mode != Mode::Off {
        // Give the API a moment, then say so once if nothing at all is known.
        let e = Arc::clone(&enrichment);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if !e.is_known() {
                tracing::warn!("no pod metadata (Downward API variables and files absent, Kubernetes API unreachable): records carry no kubernetes object except what log paths tell");
            }
        }));
    }
    Enricher {
        enrichment,
        client,
        tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::downward::ENV_NODE_NAME;
    use super::*;

    /// Found under load in CI (tests/kubernetes.rs): a restart's first records went out
    /// without `pod_uid` when the API answered late. The start waits for the API's first
    /// answer: it returns as soon as the answer is there, not before.
    #[tokio::test(start_paused = true)]
    async fn the_start_waits_for_the_apis_first_answer_about_the_pod() {
        let e = Enrichment::new(EnrichConfig::default());
        let answer = {
            let e = Arc::clone(&e);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                e.set_api(PodInfo {
                    pod_uid: Some("0b1c2d3e-1111-2222-3333-444455556666".into()),
                    ..PodInfo::default()
                });
            })
        };
        let began = tokio::time::Instant::now();
        wait_for_api(&e, API_WAIT).await;
        let waited = began.elapsed();
        assert!(
            waited >= Duration::from_millis(1500) && waited < Duration::from_millis(1600),
            "waited {waited:?} for an answer that came after 1.5 s"
        );
        assert!(e.for_stream(None, None).pod_uid.is_some());
        answer.await.unwrap();
    }

    /// An API that never answers delays the start by [`API_WAIT`], not forever: the records
    /// then go without the pod's metadata until it comes.
    #[tokio::test(start_paused = true)]
    async fn an_api_that_never_answers_delays_the_start_only_by_the_limit() {
        let e = Enrichment::new(EnrichConfig::default());
        let began = tokio::time::Instant::now();
        wait_for_api(&e, API_WAIT).await;
        let waited = began.elapsed();
        assert!(
            waited >= API_WAIT && waited < API_WAIT + Duration::from_millis(100),
            "waited {waited:?}"
        );
    }

    #[test]
    fn metadata_is_merged_selected_and_serialised_once() {
        let e = Enrichment::new(EnrichConfig {
            cluster: Some("prod-eu".into()),
            labels: Keys::List(vec!["app".into()]),
            ..EnrichConfig::default()
        });
        let env = |name: &str| match name {
            ENV_POD_NAME => Some("api-7d9f".to_owned()),
            ENV_POD_NAMESPACE => Some("shop".to_owned()),
            ENV_NODE_NAME => Some("node-1".to_owned()),
            _ => None,
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("labels"), "app=\"shop\"\ntier=\"web\"\n").unwrap();
        assert!(e.set_downward(downward(&env, dir.path())));
        assert!(
            !e.set_downward(downward(&env, dir.path())),
            "no change, no new version"
        );
        e.set_api(PodInfo {
            pod_uid: Some("0b1c2d3e-1111-2222-3333-444455556666".into()),
            owner: Some(Owner {
                kind: "Deployment".into(),
                name: "api".into(),
            }),
            ..PodInfo::default()
        });
        let meta = e.for_stream(None, Some("app"));
        let v: serde_json::Value = serde_json::from_str(meta.json.as_deref().unwrap()).unwrap();
        assert_eq!(v["cluster"], "prod-eu");
        assert_eq!(v["pod"], "api-7d9f");
        assert_eq!(v["container"], "app");
        assert_eq!(v["labels"], serde_json::json!({"app": "shop"}));
        assert_eq!(
            v["owner"],
            serde_json::json!({"kind": "Deployment", "name": "api"})
        );
        assert!(v.get("annotations").is_none());
        assert_eq!(
            meta.pod_uid.as_deref(),
            Some("0b1c2d3e-1111-2222-3333-444455556666")
        );
    }

    #[test]
    fn without_any_metadata_there_is_no_kubernetes_object() {
        let e = Enrichment::new(EnrichConfig::default());
        assert!(e.for_stream(None, None).json.is_none());
        let off = Enrichment::new(EnrichConfig {
            kubernetes: Mode::Off,
            ..EnrichConfig::default()
        });
        assert!(off
            .for_stream(Some(Path::new("/var/log/pod/app/0.log")), None)
            .json
            .is_none());
    }
}

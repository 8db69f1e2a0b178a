//! The pod read from the Kubernetes API: one get, then a watch on that one pod, so label
//! changes are seen; never a request per record. Needs only `get` and `watch` on pods.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, WatchEvent, WatchParams};

use super::{Enrichment, Owner, PodInfo};

/// Which pod this is: `POD_NAME` / `POD_NAMESPACE` from the Downward API, else the hostname
/// (a pod's hostname is its name) and the client's default namespace (the service account's).
pub(crate) fn own_pod(
    client: &kube::Client,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(String, String)> {
    let name = env(super::ENV_POD_NAME).or_else(|| env("HOSTNAME"))?;
    let namespace =
        env(super::ENV_POD_NAMESPACE).unwrap_or_else(|| client.default_namespace().to_owned());
    Some((namespace, name))
}

/// What the pod object says.
pub(crate) fn info_from(pod: &Pod) -> PodInfo {
    let meta = &pod.metadata;
    let labels = meta.labels.clone().unwrap_or_default();
    let owner = meta
        .owner_references
        .as_ref()
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.controller == Some(true))
                .or(refs.first())
        })
        .map(|r| resolve_owner(&r.kind, &r.name, labels.get("pod-template-hash")));
    PodInfo {
        namespace: meta.namespace.clone(),
        pod: meta.name.clone(),
        pod_uid: meta.uid.clone(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        pod_ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
        labels,
        annotations: meta.annotations.clone().unwrap_or_default(),
        owner: Some(owner).flatten(),
    }
}

/// A ReplicaSet made by a Deployment is named `<deployment>-<pod-template-hash>`: resolve it
/// without reading the ReplicaSet (which would need more RBAC).
fn resolve_owner(kind: &str, name: &str, template_hash: Option<&String>) -> Owner {
    if kind == "ReplicaSet" {
        if let Some(deployment) = template_hash.and_then(|h| name.strip_suffix(&format!("-{h}"))) {
            return Owner {
                kind: "Deployment".into(),
                name: deployment.into(),
            };
        }
    }
    Owner {
        kind: kind.into(),
        name: name.into(),
    }
}

/// Gets the pod, then watches it, updating `enrichment`; reconnects with backoff when the
/// watch ends or fails. Runs until dropped.
pub(crate) async fn follow_pod(
    client: kube::Client,
    namespace: String,
    name: String,
    enrichment: Arc<Enrichment>,
) {
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut backoff = Duration::from_millis(500);
    loop {
        let version = match pods.get(&name).await {
            Ok(pod) => {
                if enrichment.set_api(info_from(&pod)) {
                    tracing::info!(
                        namespace,
                        pod = name,
                        "pod metadata read from the Kubernetes API"
                    );
                }
                backoff = Duration::from_millis(500);
                pod.metadata.resource_version.unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(error = %e, namespace, pod = name, "cannot read the pod from the Kubernetes API; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(290);
        match pods.watch(&params, &version).await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(WatchEvent::Added(pod)) | Ok(WatchEvent::Modified(pod)) => {
                            if enrichment.set_api(info_from(&pod)) {
                                tracing::info!(namespace, pod = name, "pod metadata changed");
                            }
                        }
                        Ok(WatchEvent::Error(e)) => {
                            tracing::debug!(error = ?e, "pod watch ended; reading the pod again");
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "pod watch failed; reading the pod again");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the pod; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicaset_resolves_to_its_deployment() {
        let hash = "7d9f8c6b5".to_string();
        assert_eq!(
            resolve_owner("ReplicaSet", "api-7d9f8c6b5", Some(&hash)),
            Owner {
                kind: "Deployment".into(),
                name: "api".into()
            }
        );
        assert_eq!(
            resolve_owner("ReplicaSet", "standalone", Some(&hash)),
            Owner {
                kind: "ReplicaSet".into(),
                name: "standalone".into()
            }
        );
        assert_eq!(
            resolve_owner("StatefulSet", "db", None),
            Owner {
                kind: "StatefulSet".into(),
                name: "db".into()
            }
        );
    }
}

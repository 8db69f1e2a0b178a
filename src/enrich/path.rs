//! What a kubelet log path tells about whose log it is.

use std::path::Path;

use super::PodInfo;

/// What a kubelet log path tells: `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`
/// (or a path under a directory named like the pod's, as the Helm chart mounts it), or just
/// `<container>/<n>.log` below a directory that is not.
pub(super) fn from_path(path: &Path) -> (PodInfo, Option<String>) {
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .collect();
    let mut info = PodInfo::default();
    if parts.len() < 2 {
        return (info, None);
    }
    // The kubelet names a container's logs `<restart count>.log` (and `.log.<timestamp>` once
    // rotated); any other file is a shared file that says nothing about containers.
    let file = parts[parts.len() - 1];
    let kubelet_name = file
        .split_once(".log")
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !kubelet_name {
        return (info, None);
    }
    let container = parts[parts.len() - 2].to_owned();
    if parts.len() >= 3 {
        let pod_dir = parts[parts.len() - 3];
        // Namespaces and pod names cannot contain `_`; the uid is 36 characters.
        let fields: Vec<&str> = pod_dir.split('_').collect();
        if let [namespace, pod, uid] = fields[..] {
            if uid.len() == 36 && uid.chars().filter(|c| *c == '-').count() == 4 {
                info.namespace = Some(namespace.to_owned());
                info.pod = Some(pod.to_owned());
                info.pod_uid = Some(uid.to_owned());
            }
        }
    }
    (info, Some(container))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_path_tells_namespace_pod_uid_and_container() {
        let (info, container) = from_path(Path::new(
            "/var/log/pods/shop_api-7d9f_0b1c2d3e-1111-2222-3333-444455556666/app/0.log",
        ));
        assert_eq!(info.namespace.as_deref(), Some("shop"));
        assert_eq!(info.pod.as_deref(), Some("api-7d9f"));
        assert_eq!(
            info.pod_uid.as_deref(),
            Some("0b1c2d3e-1111-2222-3333-444455556666")
        );
        assert_eq!(container.as_deref(), Some("app"));
        let (info, container) = from_path(Path::new("/var/log/pod/app/0.log.20261123-120000"));
        assert!(info.is_empty());
        assert_eq!(container.as_deref(), Some("app"));
        let (info, container) = from_path(Path::new("/data/shared/app.log"));
        assert!(
            info.is_empty() && container.is_none(),
            "a shared file tells nothing"
        );
    }
}

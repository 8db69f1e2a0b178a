//! The Downward API: the pod's identity from environment variables, its labels and
//! annotations from the files of a Downward API volume (re-read every `refresh_interval`, so
//! label changes are seen without a restart).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{Enrichment, PodInfo};

/// The Downward API environment variables.
pub(crate) const ENV_POD_NAME: &str = "POD_NAME";
pub(crate) const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";
pub(super) const ENV_POD_UID: &str = "POD_UID";
pub(super) const ENV_NODE_NAME: &str = "NODE_NAME";
pub(super) const ENV_POD_IP: &str = "POD_IP";

/// Reads the Downward API: `env` looks a variable up (the process environment in production,
/// a map in tests), `dir` holds the `labels` and `annotations` files.
pub(crate) fn downward(env: &dyn Fn(&str) -> Option<String>, dir: &Path) -> PodInfo {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    PodInfo {
        namespace: var(ENV_POD_NAMESPACE),
        pod: var(ENV_POD_NAME),
        pod_uid: var(ENV_POD_UID),
        node: var(ENV_NODE_NAME),
        pod_ip: var(ENV_POD_IP),
        labels: read_key_values(&dir.join("labels")),
        annotations: read_key_values(&dir.join("annotations")),
        owner: None,
    }
}

fn read_key_values(path: &Path) -> BTreeMap<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_key_values(&text),
        Err(_) => BTreeMap::new(),
    }
}

/// Parses a Downward API file: one `key="value"` per line, the value a Go-quoted string.
/// A line that does not parse is skipped.
pub(super) fn parse_key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            Some((key.trim().to_owned(), unquote(value.trim())?))
        })
        .collect()
}

/// Undoes Go's `strconv.Quote` for the escapes it produces in these files.
fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Reads the Downward API now and then every `refresh_interval`, so label changes are seen
/// without a restart. Runs until dropped.
pub(crate) async fn follow_downward(enrichment: Arc<Enrichment>) {
    let config = enrichment.config();
    let dir = config.podinfo_dir.clone();
    let env = |name: &str| std::env::var(name).ok();
    let mut tick = tokio::time::interval(config.refresh_interval);
    loop {
        tick.tick().await;
        let info = downward(&env, &dir);
        if enrichment.set_downward(info) {
            tracing::info!(dir = %dir.display(), "pod metadata from the Downward API changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_files_are_go_quoted_key_values() {
        let text = "app=\"shop\"\napp.kubernetes.io/name=\"shop-api\"\nnote=\"a \\\"b\\\"\\nc\"\nbroken line\n";
        let kv = parse_key_values(text);
        assert_eq!(kv["app"], "shop");
        assert_eq!(kv["app.kubernetes.io/name"], "shop-api");
        assert_eq!(kv["note"], "a \"b\"\nc");
        assert_eq!(kv.len(), 3);
    }
}

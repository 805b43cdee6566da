//! The effective configuration: every config file the agent reads, as a
//! map of paths relative to `etc/`, with secrets masked.
use super::proto;
use crate::config::load;
use serde_yaml_ng::Value;
use std::path::Path;

/// What a masked value becomes.
pub const MASK: &str = "***";

/// Key names whose values are secrets (compared in lower case, as parts).
const SECRET_PARTS: [&str; 7] = [
    "password",
    "passwd",
    "token",
    "secret",
    "authorization",
    "api_key",
    "apikey",
];

/// True for keys such as `password`, `es_password`, `token`, `secret_key`,
/// `Authorization`, `api_key`.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_PARTS.iter().any(|p| k.contains(p))
}

/// Masks every value under a secret key, and every header value (any key
/// under a `headers` mapping), in place.
pub fn mask(v: &mut Value) {
    mask_at(v, false);
}

fn mask_at(v: &mut Value, secret: bool) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m.iter_mut() {
                let name = load::key_string(k);
                let is_headers = name.eq_ignore_ascii_case("headers");
                if secret || is_secret_key(&name) {
                    mask_all(child);
                } else if is_headers {
                    if let Value::Mapping(h) = child {
                        for (_, hv) in h.iter_mut() {
                            mask_all(hv);
                        }
                    } else {
                        mask_all(child);
                    }
                } else {
                    mask_at(child, false);
                }
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(|c| mask_at(c, secret)),
        Value::Tagged(t) => mask_at(&mut t.value, secret),
        _ if secret => *v = Value::String(MASK.into()),
        _ => {}
    }
}

/// Every scalar below `v` becomes [`MASK`] (a mapping keeps its keys).
fn mask_all(v: &mut Value) {
    match v {
        Value::Mapping(m) => m.iter_mut().for_each(|(_, c)| mask_all(c)),
        Value::Sequence(s) => s.iter_mut().for_each(mask_all),
        Value::Tagged(t) => mask_all(&mut t.value),
        Value::Null => {}
        other => *other = Value::String(MASK.into()),
    }
}

/// One file's text, parsed and masked (its comments are dropped: they may
/// hold secrets too). A file that does not parse is reported by its error.
pub fn masked_text(path: &Path) -> String {
    match load::read_yaml(path) {
        Ok(mut v) => {
            mask(&mut v);
            serde_yaml_ng::to_string(&v).unwrap_or_default()
        }
        Err(e) => format!("# not readable: {}\n", e.reason),
    }
}

/// The config files of `dir`, keyed by their path relative to `dir`.
pub fn config_map(dir: &Path) -> proto::AgentConfigMap {
    let mut map = proto::AgentConfigMap::default();
    for f in load::config_files(dir) {
        if !f.is_file() {
            continue;
        }
        let Ok(rel) = f.strip_prefix(dir) else {
            continue;
        };
        map.config_map.insert(
            rel.to_string_lossy().into_owned(),
            proto::AgentConfigFile {
                body: masked_text(&f).into_bytes(),
                content_type: "text/yaml".into(),
            },
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_header_values_are_masked() {
        let mut v: Value = serde_yaml_ng::from_str(
            "output: {es: {url: 'https://x', password: hunter2, es_token: [a, b]}}\n\
             opamp: {endpoint: 'https://o', headers: {Authorization: 'Bearer abc', X-Tenant: t1}}\n\
             update_api_key_file: k\nsecret: {nested: {deep: 1}}\nport: 9200\n",
        )
        .unwrap();
        mask(&mut v);
        let text = serde_yaml_ng::to_string(&v).unwrap();
        for secret in ["hunter2", "Bearer abc", "t1", "deep: 1"] {
            assert!(!text.contains(secret), "{secret} left in:\n{text}");
        }
        for kept in [
            "https://x",
            "https://o",
            "port: 9200",
            "Authorization",
            "X-Tenant",
        ] {
            assert!(text.contains(kept), "{kept} missing in:\n{text}");
        }
    }
}

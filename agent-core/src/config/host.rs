//! The `info` tags every metric carries, with `node_ip` and `host_name`
//! detected from the host when main.yaml leaves them out or empty.
use super::load;
use crate::metric::Str;
use serde_yaml_ng::{Mapping, Value};
use std::sync::Arc;

/// The `info` tags shared by every metric.
pub type InfoTags = Arc<[(Str, Str)]>;

pub(crate) fn resolve_info(info: &Mapping) -> Result<InfoTags, (String, String)> {
    let mut out: Vec<(Str, Str)> = Vec::with_capacity(info.len() + 2);
    for (k, v) in info {
        let key = load::key_string(k);
        let val = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            // An empty value means "fill it in" for the shipped keys.
            Value::Null => String::new(),
            _ => return Err((key, "info values must be plain strings or numbers".into())),
        };
        out.push((Str::new(key), Str::from(val)));
    }
    for (key, fill) in [
        ("node_ip", detect_node_ip as fn() -> String),
        ("host_name", detect_host_name),
    ] {
        match out.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) if v.is_empty() => *v = Str::from(fill()),
            Some(_) => {}
            None => out.push((Str::new(key), Str::from(fill()))),
        }
    }
    Ok(out.into())
}

/// The first non-loopback IPv4 address of the host, by interface name.
fn detect_node_ip() -> String {
    let Ok(nets) = sysinfo::Networks::new_with_refreshed_list() else {
        return "127.0.0.1".to_string();
    };
    let mut names: Vec<&std::ffi::OsString> = nets.keys().collect();
    names.sort();
    for name in names {
        for ip in nets[name].ip_networks() {
            if let std::net::IpAddr::V4(v4) = ip.addr {
                if !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local() {
                    return v4.to_string();
                }
            }
        }
    }
    "127.0.0.1".to_string()
}

pub(crate) fn detect_host_name() -> String {
    sysinfo::System::host_name()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

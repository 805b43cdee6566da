//! update_api against a real HTTP server on 127.0.0.1 (plain http, with
//! `update_api_insecure`) and a real HTTPS server with a generated CA: the
//! token is checked by the server, a valid answer is written atomically
//! with a .bak (0600), main.yaml and host.yaml together, and anything
//! invalid writes nothing.
mod common;
#[path = "../../tests/support/https.rs"]
mod https;

use agent_core::reload::remote::{pull_and_write, token, RemoteError, RemoteSettings};
use agent_core::Registry;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "s3cret-key";

/// Serves `answer` (status, body) to each request whose token is
/// md5(time + KEY); 403 otherwise. `hang` never answers. Returns the URL
/// and the request lines seen.
async fn server(status: u16, body: String, hang: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/config", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        for _ in 0..20 {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let line = head.lines().next().unwrap_or("").to_string();
            seen2.lock().unwrap().push(line.clone());
            if hang {
                tokio::time::sleep(Duration::from_secs(30)).await;
                continue;
            }
            let (code, text) = checked(&head, status, &body);
            let resp = format!(
                "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    (url, seen)
}

fn settings(url: &str, key_env: &str) -> RemoteSettings {
    RemoteSettings {
        url: url.to_string(),
        key_env: key_env.to_string(),
        key_file: None,
        node_ip: "127.0.0.9".into(),
        timeout: Duration::from_secs(2),
        // These servers are plain http on loopback.
        insecure: true,
        ca_file: None,
    }
}

/// The answer to a request head: `status` and `body` when the token is
/// md5(time + KEY) and the method POST, else 403.
fn checked(head: &str, status: u16, body: &str) -> (u16, String) {
    let line = head.lines().next().unwrap_or("");
    let query = line
        .split(' ')
        .nth(1)
        .and_then(|p| p.split_once('?'))
        .map(|x| x.1)
        .unwrap_or("");
    let get = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    let ts: i64 = get("time").parse().unwrap_or(0);
    if get("token") == token(ts, KEY) && line.starts_with("POST ") {
        (status, body.to_string())
    } else {
        (403, "{\"msg\": \"bad token\"}".to_string())
    }
}

/// An HTTPS update_api on 127.0.0.1 (`localhost` in its certificate) with
/// a new CA written to `ca`; counts its requests.
fn https_api(ca: &std::path::Path, body: String) -> (String, Arc<Mutex<usize>>) {
    let hits = Arc::new(Mutex::new(0));
    let counted = hits.clone();
    let port = https::https_server_with(
        ca,
        20,
        Arc::new(move |head: &str| {
            *counted.lock().unwrap() += 1;
            checked(head, 200, &body)
        }),
    );
    (format!("https://localhost:{port}/v1/config"), hits)
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

const OLD_MAIN: &str = "open: [demo]\ncommon_output: [console]\n";

fn answer(main: &str, host: &str) -> String {
    format!("{{\"data\": {{\"main\": {main}, \"host\": {host}}}, \"msg\": \"ok\"}}")
}

#[tokio::test]
async fn a_valid_answer_is_written_atomically_with_a_backup() {
    std::env::set_var("TEST_KEY_VALID", KEY);
    let (_d, etc) = common::etc(&[("main.yaml", OLD_MAIN)]);
    let body = answer(
        r#"{"open": ["demo"], "interval": 5, "common_output": ["console"]}"#,
        r#"{"info": {"region": "eu"}}"#,
    );
    let (url, seen) = server(200, body, false).await;
    let r = Registry::with_builtins();
    let wrote = pull_and_write(&settings(&url, "TEST_KEY_VALID"), &etc, &r)
        .await
        .unwrap();
    assert!(wrote);
    let main = std::fs::read_to_string(etc.join("main.yaml")).unwrap();
    assert!(main.contains("interval: 5"), "{main}");
    assert!(std::fs::read_to_string(etc.join("host.yaml"))
        .unwrap()
        .contains("region: eu"));
    assert_eq!(
        std::fs::read_to_string(etc.join("main.yaml.bak")).unwrap(),
        OLD_MAIN
    );
    let cfg = agent_core::AgentConfig::load(&etc).unwrap();
    assert_eq!(cfg.main.interval.as_secs_f64(), 5.0);
    // The request carried PyAgent's parameters; the same answer again changes nothing.
    let line = seen.lock().unwrap()[0].clone();
    assert!(
        line.starts_with("POST /v1/config?time=") && line.contains("&node_ip=127.0.0.9"),
        "{line}"
    );
    assert!(!pull_and_write(&settings(&url, "TEST_KEY_VALID"), &etc, &r)
        .await
        .unwrap());
}

#[tokio::test]
async fn an_invalid_config_writes_nothing() {
    std::env::set_var("TEST_KEY_INVALID", KEY);
    let (_d, etc) = common::etc(&[("main.yaml", OLD_MAIN)]);
    let r = Registry::with_builtins();
    for (body, needle) in [
        (
            answer(
                r#"{"open": ["nosuch"], "common_output": ["console"]}"#,
                "null",
            ),
            "unknown input plugin `nosuch`",
        ),
        (
            answer(r#"{"open": ["demo"], "interval": "soon"}"#, "null"),
            "key `interval`",
        ),
        (
            answer(r#"{"open": ["demo"]}"#, r#"{"reload_sec": 1}"#),
            "reload_sec",
        ),
        (answer("[1, 2]", "null"), "data.main"),
        ("this is not json".to_string(), "JSON"),
    ] {
        let (url, _) = server(200, body.clone(), false).await;
        let err = pull_and_write(&settings(&url, "TEST_KEY_INVALID"), &etc, &r)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{body}: {err}");
        assert_eq!(
            std::fs::read_to_string(etc.join("main.yaml")).unwrap(),
            OLD_MAIN
        );
        assert!(!etc.join("host.yaml").exists());
        assert!(!etc.join("main.yaml.bak").exists());
    }
    // An empty `data.main` means: nothing to change.
    let (url, _) = server(200, answer("{}", "null"), false).await;
    assert!(
        !pull_and_write(&settings(&url, "TEST_KEY_INVALID"), &etc, &r)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn http_errors_timeouts_and_missing_keys() {
    std::env::set_var("TEST_KEY_ERRORS", KEY);
    std::env::set_var("TEST_KEY_WRONG", "not-the-key");
    let (_d, etc) = common::etc(&[("main.yaml", OLD_MAIN)]);
    let r = Registry::with_builtins();

    let (url, _) = server(500, "{}".into(), false).await;
    let err = pull_and_write(&settings(&url, "TEST_KEY_ERRORS"), &etc, &r)
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Status(500)), "{err}");

    let (url, _) = server(200, answer(r#"{"open": ["demo"]}"#, "null"), false).await;
    let err = pull_and_write(&settings(&url, "TEST_KEY_WRONG"), &etc, &r)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemoteError::Status(403)),
        "wrong token refused: {err}"
    );
    assert!(
        !err.to_string().contains("not-the-key"),
        "the key is never shown"
    );

    let err = pull_and_write(&settings(&url, "TEST_KEY_UNSET_ANYWHERE"), &etc, &r)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TEST_KEY_UNSET_ANYWHERE"), "{err}");

    let (url, _) = server(200, "{}".into(), true).await;
    let mut s = settings(&url, "TEST_KEY_ERRORS");
    s.timeout = Duration::from_millis(500);
    let start = Instant::now();
    let err = pull_and_write(&s, &etc, &r).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
    assert!(matches!(err, RemoteError::Http(_)), "{err}");
    assert_eq!(
        std::fs::read_to_string(etc.join("main.yaml")).unwrap(),
        OLD_MAIN
    );
}

#[tokio::test]
async fn https_with_a_private_ca_replaces_main_and_host_together_0600() {
    std::env::set_var("TEST_KEY_HTTPS", KEY);
    let old_host = "info: {region: us}\n";
    let (dir, etc) = common::etc(&[("main.yaml", OLD_MAIN), ("host.yaml", old_host)]);
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["main.yaml", "host.yaml"] {
            std::fs::set_permissions(etc.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let ca = dir.path().join("ca.pem");
    let body = answer(
        r#"{"open": ["demo"], "interval": 7, "common_output": ["console"], "output": {"console": {"password_like": "x"}}}"#,
        r#"{"info": {"region": "eu"}}"#,
    );
    let (url, hits) = https_api(&ca, body);
    let mut s = settings(&url, "TEST_KEY_HTTPS");
    s.insecure = false;
    s.ca_file = Some(ca.clone());
    assert_eq!(s.fetch_warning(), None, "https: no warning");
    let r = Registry::with_builtins();
    let wrote = pull_and_write(&s, &etc, &r).await.unwrap();
    assert!(wrote);
    assert_eq!(*hits.lock().unwrap(), 1);
    let main = std::fs::read_to_string(etc.join("main.yaml")).unwrap();
    assert!(main.contains("interval: 7"), "{main}");
    let host = std::fs::read_to_string(etc.join("host.yaml")).unwrap();
    assert!(host.contains("region: eu"), "{host}");
    assert_eq!(
        std::fs::read_to_string(etc.join("main.yaml.bak")).unwrap(),
        OLD_MAIN
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("host.yaml.bak")).unwrap(),
        old_host
    );
    for f in ["main.yaml", "host.yaml", "main.yaml.bak", "host.yaml.bak"] {
        assert_eq!(mode(&etc.join(f)), 0o600, "{f}");
    }
    // No staged file left behind.
    let names: Vec<String> = std::fs::read_dir(&etc)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let cfg = agent_core::AgentConfig::load(&etc).unwrap();
    assert_eq!(cfg.main.interval.as_secs_f64(), 7.0);
}

#[tokio::test]
async fn https_without_the_ca_is_refused_and_writes_nothing() {
    std::env::set_var("TEST_KEY_NOCA", KEY);
    let (dir, etc) = common::etc(&[("main.yaml", OLD_MAIN)]);
    let ca = dir.path().join("ca.pem");
    let (url, _) = https_api(&ca, answer(r#"{"open": ["demo"], "interval": 9}"#, "null"));
    let mut s = settings(&url, "TEST_KEY_NOCA");
    s.insecure = false;
    let r = Registry::with_builtins();
    let err = pull_and_write(&s, &etc, &r).await.unwrap_err();
    assert!(
        matches!(err, RemoteError::Http(_)),
        "certificate refused: {err}"
    );
    // A CA file that is not there is an error, not a fallback to the system CAs.
    s.ca_file = Some(dir.path().join("missing.pem"));
    let err = pull_and_write(&s, &etc, &r).await.unwrap_err();
    assert!(matches!(err, RemoteError::CaFile(_)), "{err}");
    assert_eq!(
        std::fs::read_to_string(etc.join("main.yaml")).unwrap(),
        OLD_MAIN
    );
    assert!(!etc.join("main.yaml.bak").exists());
}

#[tokio::test]
async fn plain_http_is_refused_unless_insecure_and_then_warned_about() {
    std::env::set_var("TEST_KEY_PLAIN", KEY);
    let (_d, etc) = common::etc(&[("main.yaml", OLD_MAIN)]);
    let (url, seen) = server(200, answer(r#"{"open": ["demo"]}"#, "null"), false).await;
    let mut s = settings(&url, "TEST_KEY_PLAIN");
    s.insecure = false;
    let r = Registry::with_builtins();
    let err = pull_and_write(&s, &etc, &r).await.unwrap_err();
    assert!(matches!(err, RemoteError::Insecure), "{err}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "no request sent over plain http"
    );
    s.insecure = true;
    let warning = s.fetch_warning().expect("a warning for plain http");
    assert!(
        warning.contains("plain http") && warning.contains("/v1/config"),
        "{warning}"
    );
    assert!(pull_and_write(&s, &etc, &r).await.unwrap());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// When staging host.yaml fails, main.yaml is not replaced either.
#[test]
fn a_failed_stage_replaces_nothing() {
    use agent_core::reload::remote::replace_together;
    let (_d, etc) = common::etc(&[("main.yaml", OLD_MAIN)]);
    // The staging path of host.yaml is a folder: writing it fails.
    std::fs::create_dir_all(etc.join(".host.yaml.tmp")).unwrap();
    let writes = vec![
        (
            etc.join("main.yaml"),
            "open: [demo]\ninterval: 3\n".to_string(),
        ),
        (etc.join("host.yaml"), "info: {a: b}\n".to_string()),
    ];
    let err = replace_together(&etc, &writes).unwrap_err();
    assert!(err.to_string().contains(".host.yaml.tmp"), "{err}");
    assert_eq!(
        std::fs::read_to_string(etc.join("main.yaml")).unwrap(),
        OLD_MAIN
    );
    assert!(!etc.join("host.yaml").exists());
    assert!(
        !etc.join(".main.yaml.tmp").exists(),
        "staged main.yaml removed"
    );
    assert!(!etc.join("main.yaml.bak").exists());
}

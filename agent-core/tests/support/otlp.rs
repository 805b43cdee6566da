//! The OTLP receiver of the otlp output's tests: `otlp_receiver.py` beside
//! this file, which decodes with the upstream `opentelemetry-proto` PyPI
//! package. Started on 127.0.0.1, stopped (SIGTERM: requests in flight are
//! answered) on drop.
#![allow(dead_code)]
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Receiver {
    pub port: u16,
    pub out: PathBuf,
    child: Option<Child>,
}

impl Receiver {
    /// Starts the receiver on `port` (0: any free one), appending what it
    /// decodes to `out`, answering the first requests as `script` says.
    pub fn start(port: u16, out: &Path, script: &str) -> Receiver {
        let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(&py)
            .arg("--port")
            .arg(port.to_string())
            .arg("--out")
            .arg(out)
            .arg("--script")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs (Debian python3)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        let Some(port) = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
        else {
            let _ = child.kill();
            let out = child.wait_with_output().expect("receiver exit");
            panic!(
                "OTLP receiver did not start: {line:?}\n{}\n(needs `python3 -m pip install \
                 opentelemetry-proto==1.45.2 protobuf==7.36.2`, done by .ci/run)",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        Receiver {
            port,
            out: out.to_path_buf(),
            child: Some(child),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/metrics", self.port)
    }

    /// Stops it gracefully and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        read_requests(&self.out)
    }
}

pub fn read_requests(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("receiver writes JSON lines"))
        .collect()
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The metrics of a decoded request, over every resource and scope:
/// (resource attributes, metric).
pub fn metrics_of(request: &Value) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for rm in request["resource_metrics"].as_array().into_iter().flatten() {
        for sm in rm["scope_metrics"].as_array().into_iter().flatten() {
            for m in sm["metrics"].as_array().into_iter().flatten() {
                out.push((rm["resource"]["attributes"].clone(), m.clone()));
            }
        }
    }
    out
}

/// An attribute list as (key, value) with string values as they are and
/// other values as their JSON.
pub fn attrs(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            let v = &kv["value"];
            let text = match v.get("string_value") {
                Some(Value::String(s)) => s.clone(),
                _ => v.to_string(),
            };
            (kv["key"].as_str().unwrap_or_default().to_string(), text)
        })
        .collect()
}

//! Real backends from Debian packages (victoria-metrics, influxdb,
//! prometheus) started by the tests on free 127.0.0.1 ports with temp data
//! dirs, waited for (bounded) and killed on drop. A missing binary fails the
//! test with the package to install; nothing silently passes.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().unwrap().port()
}

/// The binary's path, or a panic naming the Debian package.
pub fn require(bin: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{bin}` not found: this test needs the Debian package `{package}` (apt-get install -y {package}; listed in .ci/apt-packages.txt)");
}

/// Percent-encodes a query-string value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// GET with a 5 s timeout; (status, body).
pub async fn get(url: &str) -> Result<(u16, String), String> {
    use isahc::config::Configurable;
    use isahc::AsyncReadResponseExt;
    let req = isahc::Request::get(url)
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .body(())
        .map_err(|e| e.to_string())?;
    let mut resp = isahc::send_async(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// A running backend process; killed (and waited for) on drop.
pub struct Backend {
    pub name: &'static str,
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Backend {
    pub fn spawn(
        name: &'static str,
        bin: PathBuf,
        args: &[String],
        port: u16,
        dir: &Path,
    ) -> Backend {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(&bin)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Backend {
            name,
            port,
            dir: dir.to_path_buf(),
            child: Some(child),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Polls `path` until it answers `status` (at most `limit`).
    pub async fn wait_ready(&mut self, path: &str, status: u16, limit: Duration) {
        let started = Instant::now();
        let url = self.url(path);
        loop {
            if let Ok((s, _)) = get(&url).await {
                if s == status {
                    return;
                }
            }
            if let Some(Ok(Some(exit))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "{} exited early ({exit}); log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < limit,
                "{} not ready on {url} within {limit:?}; log:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Graceful stop (SIGINT), waited for at most 20 s, then SIGKILL.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub async fn victoria_metrics(data: &Path, port: u16) -> Backend {
    let bin = require("victoria-metrics", "victoria-metrics");
    let args = vec![
        format!("-storageDataPath={}", data.display()),
        format!("-httpListenAddr=127.0.0.1:{port}"),
        "-search.latencyOffset=0s".to_string(),
        "-search.disableCache".to_string(),
        "-retentionPeriod=100y".to_string(),
        "-loggerLevel=ERROR".to_string(),
    ];
    let mut b = Backend::spawn("victoria-metrics", bin, &args, port, data);
    b.wait_ready("/health", 200, Duration::from_secs(30)).await;
    b
}

pub async fn influxd(dir: &Path) -> Backend {
    let bin = require("influxd", "influxdb");
    let port = free_port();
    let rpc = free_port();
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("influxdb.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [continuous_queries]\n  enabled = false\n"
        ),
    )
    .unwrap();
    let args = vec!["-config".to_string(), conf.display().to_string()];
    let mut b = Backend::spawn("influxd", bin, &args, port, dir);
    b.wait_ready("/ping", 204, Duration::from_secs(30)).await;
    b
}

pub async fn prometheus(dir: &Path, target: &str) -> Backend {
    let bin = require("prometheus", "prometheus");
    let port = free_port();
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: agent\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let args = vec![
        format!("--config.file={}", conf.display()),
        format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=error".to_string(),
    ];
    let mut b = Backend::spawn("prometheus", bin, &args, port, dir);
    b.wait_ready("/-/ready", 200, Duration::from_secs(60)).await;
    b
}

/// Runs one agent life in its own thread and actix System: `gathers`
/// gathers of `registry`'s inputs, then waits (bounded) until `output` has
/// taken `expected` metrics. With `crash`, the System is dropped without
/// Shutdown (after letting a few writes fail against a dead backend), as a
/// killed process would leave things; else a Shutdown drains and flushes.
/// Returns the output's `metrics_in` and the undelivered count
/// (`usize::MAX` after a crash).
pub fn agent_life(
    etc: PathBuf,
    registry: agent_core::Registry,
    gathers: usize,
    expected: u64,
    output: &'static str,
    crash: bool,
) -> std::thread::JoinHandle<(u64, usize)> {
    use actix::prelude::*;
    use agent_core::{AgentConfig, GatherOnce, PipelineSupervisor, Plan, Shutdown, Status};
    use std::sync::Arc;
    std::thread::spawn(move || {
        let sys = actix::System::new();
        sys.block_on(async move {
            let cfg = AgentConfig::load(&etc).unwrap();
            let plan = Plan::new(&cfg, &registry).unwrap();
            let log = slog::Logger::root(slog::Discard, slog::o!());
            let sup = PipelineSupervisor::new(cfg, plan, Arc::new(registry), log)
                .unscheduled()
                .start();
            for _ in 0..gathers {
                sup.send(GatherOnce).await.unwrap();
            }
            let started = Instant::now();
            let metrics_in = loop {
                let s = sup.send(Status).await.unwrap();
                let got = s.find("output", output).unwrap().stats.metrics_in;
                if got >= expected || started.elapsed() > Duration::from_secs(10) {
                    break got;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if crash {
                tokio::time::sleep(Duration::from_millis(700)).await;
                return (metrics_in, usize::MAX);
            }
            let report = sup
                .send(Shutdown {
                    deadline: Duration::from_secs(15),
                })
                .await
                .unwrap();
            (metrics_in, report.undelivered)
        })
        // `sys` drops here: every actor is dropped without a flush.
    })
}

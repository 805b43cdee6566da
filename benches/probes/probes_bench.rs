//! Scale run of the network probes: N telnet targets (one loopback
//! listener each), N curl targets (one loopback HTTP server) and N ping
//! targets (127.0.1.1 .. 127.0.4.232 for 1,000), gathered once per
//! interval. N is `PROBES_TARGETS` (default 1,000).
//!
//! `probes_bench <telnet|curl|ping|all> [rounds] [interval_s]` prints, per
//! probe kind, the wall time of each round, then the process's CPU seconds
//! per minute and peak RSS. The servers run in a child process
//! (`probes_bench serve`, also used by `agent_scale.sh`) so they are not
//! counted. Loopback only.
use agent_core::plugins::inputs::{curl::Curl, ping::Ping, telnet::Telnet};
use agent_core::{Accumulator, FieldValue, Input, Metric, PluginConfig};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Targets per kind: `PROBES_TARGETS`, else 1,000.
fn targets() -> usize {
    std::env::var("PROBES_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1000)
}

/// Listen backlog of every server socket: a round's connects arrive in
/// bursts of up to `worker_limit` (1,000 for telnet).
const BACKLOG: u32 = 4096;
/// Telnet listeners share this many ports, each port bound on several
/// 127.2.x.y addresses: few ports are taken from the ephemeral range the
/// probes' own connections need.
const LISTENER_PORTS: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("all");
    if mode == "serve" {
        return serve();
    }
    let rounds: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(6);
    let interval =
        Duration::from_secs_f64(args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10.0));
    let kinds: Vec<&str> = match mode {
        "all" => vec!["telnet", "curl", "ping"],
        k @ ("telnet" | "curl" | "ping") => vec![k],
        other => {
            eprintln!("unknown mode {other}: telnet, curl, ping, all or serve");
            std::process::exit(2);
        }
    };

    let n_targets = targets();
    // The servers, in a child process: it prints the telnet listeners
    // (`ip:port,...`), then the HTTP port.
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .arg("serve")
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let telnet_addrs: Vec<String> = lines
        .next()
        .and_then(|l| l.ok())
        .map(|l| l.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let http_port: u16 = lines
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    assert_eq!(telnet_addrs.len(), n_targets, "server did not start");

    let yaml = |kind: &str| -> String {
        let mut y = String::new();
        match kind {
            "telnet" => {
                y.push_str("timeout: 2\ntarget:\n");
                for (i, a) in telnet_addrs.iter().enumerate() {
                    y.push_str(&format!("  T{i}: {{address: '{a}'}}\n"));
                }
            }
            "curl" => {
                y.push_str("timeout: 5\ntarget:\n");
                for i in 0..n_targets {
                    y.push_str(&format!(
                        "  C{i}: {{url: 'http://127.0.0.1:{http_port}/health?i={i}'}}\n"
                    ));
                }
            }
            _ => {
                // PyAgent's defaults: 60 echoes, 0.1 s apart, 0.7 s timeout.
                y.push_str("count: 60\ntimeout: 0.7\ninterval_ping: 0.1\ntarget:\n");
                for i in 0..n_targets {
                    y.push_str(&format!(
                        "  P{i}: {{address: 127.0.{}.{}}}\n",
                        1 + i / 250,
                        1 + i % 250
                    ));
                }
            }
        }
        y
    };
    let configs: Vec<(String, PluginConfig)> = kinds
        .iter()
        .map(|k| {
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml(k)).expect("yaml");
            (k.to_string(), PluginConfig::from_value(k, v))
        })
        .collect();

    let sys = actix_rt::System::new();
    let report = sys.block_on(async move {
        let mut telnet = None;
        let mut curl = None;
        let mut ping = None;
        for (k, c) in &configs {
            match k.as_str() {
                "telnet" => telnet = Some(Telnet::from_config(c).expect("telnet config")),
                "curl" => curl = Some(Curl::from_config(c).expect("curl config")),
                _ => ping = Some(Ping::from_config(c).expect("ping config")),
            }
        }
        let started = Instant::now();
        let cpu0 = cpu_seconds();
        let mut walls: Vec<(&'static str, Vec<f64>, String)> = Vec::new();
        let mut ticker = tokio::time::interval(interval);
        for round in 0..rounds {
            ticker.tick().await;
            let t = async {
                match telnet.as_mut() {
                    Some(p) => Some(timed(p).await),
                    None => None,
                }
            };
            let c = async {
                match curl.as_mut() {
                    Some(p) => Some(timed(p).await),
                    None => None,
                }
            };
            let pg = async {
                match ping.as_mut() {
                    Some(p) => Some(timed(p).await),
                    None => None,
                }
            };
            let (t, c, pg) = futures::join!(t, c, pg);
            for (name, r) in [("telnet", t), ("curl", c), ("ping", pg)] {
                let Some((wall, metrics)) = r else { continue };
                let summary = summarize(name, &metrics);
                eprintln!("round {round} {name}: {wall:.3} s ({summary})");
                match walls.iter_mut().find(|w| w.0 == name) {
                    Some(w) => {
                        w.1.push(wall);
                        w.2 = summary;
                    }
                    None => walls.push((name, vec![wall], summary)),
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        (walls, cpu, elapsed)
    });
    let (walls, cpu, elapsed) = report;
    let _ = child.stdin.take().map(|mut s| s.write_all(b"q\n"));
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "mode={mode} targets={n_targets} rounds={rounds} interval={:.0}s",
        interval.as_secs_f64()
    );
    for (name, w, summary) in &walls {
        let mut s = w.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name}: round wall median {:.3} s, max {:.3} s; last round: {summary}",
            s[s.len() / 2],
            s[s.len() - 1]
        );
    }
    println!(
        "cpu {:.2} s over {:.1} s = {:.2} CPU s/min; peak RSS {} KiB",
        cpu,
        elapsed,
        cpu / elapsed * 60.0,
        peak_rss_kib()
    );
}

async fn timed<P: Input>(p: &mut P) -> (f64, Vec<Metric>) {
    let mut acc = Accumulator::new("bench", vec![].into());
    let t = Instant::now();
    if let Err(e) = p.gather(&mut acc).await {
        eprintln!("gather error: {e}");
    }
    (t.elapsed().as_secs_f64(), acc.take())
}

fn summarize(kind: &str, ms: &[Metric]) -> String {
    let get = |m: &Metric, k: &str| m.field(k).and_then(FieldValue::as_f64).unwrap_or(f64::NAN);
    match kind {
        "ping" => {
            let lossy = ms.iter().filter(|m| get(m, "loss") > 0.0).count();
            let avg = ms.iter().map(|m| get(m, "average")).sum::<f64>() / ms.len().max(1) as f64;
            format!(
                "{} targets, {lossy} with loss, mean avg rtt {avg:.3} ms",
                ms.len()
            )
        }
        "telnet" => {
            let open = ms
                .iter()
                .filter(|m| m.field("yes") == Some(&FieldValue::Bool(true)))
                .count();
            format!("{} targets, {open} open", ms.len())
        }
        _ => {
            let ok = ms.iter().filter(|m| get(m, "status") == 200.0).count();
            format!("{} targets, {ok} status 200", ms.len())
        }
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The loopback servers: one TCP listener per telnet target and one HTTP/1.1
/// server; they stop when the parent closes our stdin.
fn serve() {
    raise_nofile();
    std::thread::spawn(serve_loopback);
    // Until the parent goes away (closes or writes to our stdin).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// The servers need a descriptor per listener and per open connection.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(addr)?;
    s.listen(BACKLOG)
}

/// `n` listeners: [`LISTENER_PORTS`] ports picked by the kernel on
/// 127.2.0.1, the same ports on 127.2.0.2, 127.2.0.3, ... (a port taken
/// there by someone else is replaced by any free one).
fn telnet_listeners(n: usize) -> (Vec<tokio::net::TcpListener>, Vec<String>) {
    let mut listeners = Vec::with_capacity(n);
    let mut addrs = Vec::with_capacity(n);
    let mut ports: Vec<u16> = Vec::new();
    for i in 0..n {
        let host = i / LISTENER_PORTS;
        let ip = std::net::Ipv4Addr::new(127, 2, (host / 250) as u8, (1 + host % 250) as u8);
        let want = ports.get(i % LISTENER_PORTS).copied().unwrap_or(0);
        let l = listen((ip, want).into())
            .or_else(|_| listen((ip, 0).into()))
            .expect("bind a telnet listener");
        let a = l.local_addr().expect("addr");
        if ports.len() < LISTENER_PORTS {
            ports.push(a.port());
        }
        addrs.push(a.to_string());
        listeners.push(l);
    }
    (listeners, addrs)
}

fn serve_loopback() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (listeners, addrs) = telnet_listeners(targets());
        for l in listeners {
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    drop(s);
                }
            });
        }
        let http = listen(([127, 0, 0, 1], 0).into()).expect("bind");
        let http_port = http.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = http.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut have = 0;
                    loop {
                        let Ok(n) = s.read(&mut buf[have..]).await else { return };
                        if n == 0 {
                            return;
                        }
                        have += n;
                        while let Some(p) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.copy_within(p + 4..have, 0);
                            have -= p + 4;
                            let body = br#"{"status":"up"}"#;
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            );
                            if s.write_all(head.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
                                return;
                            }
                        }
                        if have == buf.len() {
                            return;
                        }
                    }
                });
            }
        });
        println!("{}", addrs.join(","));
        println!("{http_port}");
        let _ = std::io::stdout().flush();
        std::future::pending::<()>().await;
    });
}

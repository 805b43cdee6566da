//! The polling loop: one `AgentToServer` POST per `poll_sec` (±10 %),
//! exponential backoff with jitter on errors (capped by `retry_max_sec`),
//! the server's retry hints honoured (`Retry-After` of a 429/503, and
//! `ServerErrorResponse.retry_info`).
//!
//! The first message after start and after every error carries the full
//! state (description, health, effective config, remote config status): the
//! server may have restarted and forgotten us. Later ones carry the UID,
//! sequence number, capabilities and health, plus whatever changed.
use super::apply::{self, RemoteState};
use super::health::HealthTracker;
use super::{identity, proto, OpampError, OpampSettings, CAPABILITIES, MAX_RESPONSE_BYTES};
use crate::config::AgentConfig;
use crate::pipeline::{PipelineSupervisor, Status};
use crate::registry::Registry;
use crate::reload::ReloaderHandle;
use actix::prelude::*;
use futures::AsyncReadExt;
use isahc::config::{Configurable, RedirectPolicy};
use isahc::tls::{TlsConfig, TrustStore};
use prost::Message as _;
use slog::{debug, error, info, warn, Logger};
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Longest wait a server's retry hint can impose.
const MAX_RETRY_HINT: Duration = Duration::from_secs(3600);
/// How long an applied offer may take to go through the reloader.
const RELOAD_WAIT: Duration = Duration::from_secs(30);
/// While `opamp:` is off, how often the client looks again (after reloads).
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// The OpAMP client of one agent.
pub struct OpampClient {
    dir: PathBuf,
    registry: Arc<Registry>,
    supervisor: Addr<PipelineSupervisor>,
    reloader: ReloaderHandle,
    log: Logger,
    start_ns: u64,
}

/// Tells the running client to say goodbye (`AgentDisconnect`) and stop.
pub struct OpampHandle {
    stop: tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<()>>,
}

impl OpampHandle {
    /// Sends `AgentDisconnect` (when connected) and stops the client; waits
    /// at most `deadline`, so a server that does not answer cannot hold up
    /// the agent's shutdown.
    pub async fn disconnect(&self, deadline: Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.stop.send(tx).is_ok() {
            let _ = tokio::time::timeout(deadline, rx).await;
        }
    }
}

/// Starts the client inside the actix system. It runs until the system
/// stops or [`OpampHandle::disconnect`]; with `opamp:` off it only watches
/// for a reload that turns it on. A bad `opamp:` block is logged (file,
/// key, reason) and retried after the next reload.
pub fn start(
    config: &AgentConfig,
    registry: Arc<Registry>,
    supervisor: Addr<PipelineSupervisor>,
    reloader: ReloaderHandle,
    log: Logger,
) -> OpampHandle {
    let settings = match OpampSettings::from_config(config) {
        Ok(s) => s,
        Err(e) => {
            error!(log, "OpAMP client off: bad configuration"; "error" => %e);
            None
        }
    };
    let client = OpampClient {
        dir: config.dir.clone(),
        registry,
        supervisor,
        reloader,
        log,
        start_ns: u64::try_from(crate::metric::now_ns()).unwrap_or(0),
    };
    let (stop, stop_rx) = tokio::sync::mpsc::unbounded_channel();
    actix::spawn(client.run(settings, stop_rx));
    OpampHandle { stop }
}

/// What the loop remembers between polls.
struct Session {
    uid: Option<[u8; 16]>,
    seq: u64,
    /// Send everything in the next message.
    full: bool,
    /// The reload generation whose effective config was last reported.
    reported_generation: u64,
    /// The reload generation the settings were read at.
    settings_generation: u64,
    remote: RemoteState,
    /// A remote config status to report in the next message.
    pending_status: Option<proto::RemoteConfigStatus>,
    health: HealthTracker,
    failures: u32,
    /// The uid and state files the loaded state belongs to.
    state_file: Option<PathBuf>,
}

impl OpampClient {
    fn generation(&self) -> (u64, u64, String) {
        let st = self.reloader.state();
        let s = st.lock().unwrap_or_else(|e| e.into_inner());
        (s.generation, s.attempts, s.last_result.clone())
    }

    async fn run(
        self,
        mut settings: Option<OpampSettings>,
        mut stop: tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
    ) {
        let mut session = Session {
            uid: None,
            seq: 0,
            full: true,
            reported_generation: 0,
            settings_generation: self.generation().0,
            remote: RemoteState::default(),
            pending_status: None,
            health: HealthTracker::default(),
            failures: 0,
            state_file: None,
        };
        let mut backoff: Option<crate::pipeline::Backoff> = None;
        let mut warned_for: Option<String> = None;
        loop {
            let (generation, _, _) = self.generation();
            if generation != session.settings_generation {
                session.settings_generation = generation;
                // Local edits of `opamp:` take effect at the next poll.
                match AgentConfig::load(&self.dir).and_then(|c| OpampSettings::from_config(&c)) {
                    Ok(s) => settings = s,
                    Err(e) => {
                        error!(self.log, "OpAMP settings not changed: bad configuration"; "error" => %e)
                    }
                }
            }
            let Some(s) = settings.clone() else {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_CHECK) => continue,
                    done = stop.recv() => {
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        return;
                    }
                }
            };
            if s.insecure
                && !crate::config::is_https(&s.endpoint)
                && warned_for.as_deref() != Some(&s.endpoint)
            {
                warn!(self.log, "OpAMP endpoint is plain http, allowed by opamp.insecure: anyone on the path can change this agent's configuration";
                    "endpoint" => %s.endpoint);
                warned_for = Some(s.endpoint.clone());
            }
            if session.state_file.as_ref() != Some(&s.state_file) {
                session.remote = RemoteState::load(&s.state_file);
                session.state_file = Some(s.state_file.clone());
                session.uid = None;
            }
            let uid = match session.uid {
                Some(u) => u,
                None => match identity::load_or_create(&s.uid_file) {
                    Ok(u) => {
                        info!(self.log, "OpAMP client starting"; "endpoint" => %s.endpoint,
                            "instance_uid" => %uuid::Uuid::from_bytes(u), "uid_file" => %s.uid_file.display());
                        session.uid = Some(u);
                        u
                    }
                    Err(e) => {
                        error!(self.log, "OpAMP client cannot keep its instance UID"; "error" => %e);
                        tokio::time::sleep(s.retry_max).await;
                        continue;
                    }
                },
            };
            let msg = self.message(&s, &mut session, uid).await;
            let b = backoff.get_or_insert_with(|| {
                crate::pipeline::Backoff::new(Duration::from_secs(1).min(s.retry_max), s.retry_max)
            });
            let wait = match post(&s, msg.encode_to_vec()).await {
                Ok(answer) => {
                    if session.failures > 0 {
                        info!(self.log, "OpAMP server reachable again"; "failed_polls" => session.failures);
                    }
                    session.failures = 0;
                    b.reset();
                    let again = self.handle(&s, &mut session, uid, answer).await;
                    if again {
                        Duration::ZERO
                    } else {
                        jitter(s.poll, 0.9, 1.1)
                    }
                }
                Err(e) => {
                    session.failures = session.failures.saturating_add(1);
                    // The server may come back without our state.
                    session.full = true;
                    let wait = match e.retry_after() {
                        Some(hint) => hint.min(MAX_RETRY_HINT),
                        None => jitter(b.next_delay(), 0.5, 1.0),
                    };
                    // The first failure and then every tenth: a server down
                    // for a day is not a log line per retry.
                    if session.failures == 1 || session.failures.is_multiple_of(10) {
                        warn!(self.log, "OpAMP poll failed"; "error" => %e, "failures" => session.failures,
                            "retry_in_ms" => wait.as_millis() as u64);
                    }
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                done = stop.recv() => {
                    // The server learns the agent left, rather than
                    // missing heartbeats.
                    let msg = proto::AgentToServer {
                        instance_uid: uid.to_vec(),
                        sequence_num: session.seq,
                        capabilities: CAPABILITIES,
                        agent_disconnect: Some(proto::AgentDisconnect {}),
                        ..Default::default()
                    };
                    if session.failures == 0 {
                        if let Err(e) = post(&s, msg.encode_to_vec()).await {
                            debug!(self.log, "AgentDisconnect not delivered"; "error" => %e);
                        }
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    }

    /// The next `AgentToServer`.
    async fn message(
        &self,
        s: &OpampSettings,
        session: &mut Session,
        uid: [u8; 16],
    ) -> proto::AgentToServer {
        let (generation, _, reload_result) = self.generation();
        let now = u64::try_from(crate::metric::now_ns()).unwrap_or(0);
        let health = match self.supervisor.send(Status).await {
            Ok(report) => session
                .health
                .report(&report, self.start_ns, now, &reload_result),
            Err(e) => proto::ComponentHealth {
                healthy: false,
                start_time_unix_nano: self.start_ns,
                last_error: format!("pipeline supervisor not answering: {e}"),
                status: "unhealthy".into(),
                status_time_unix_nano: now,
                ..Default::default()
            },
        };
        let mut msg = proto::AgentToServer {
            instance_uid: uid.to_vec(),
            sequence_num: session.seq,
            capabilities: CAPABILITIES,
            health: Some(health),
            ..Default::default()
        };
        session.seq = session.seq.wrapping_add(1);
        if session.full {
            msg.agent_description = Some(super::description(&s.host_name, &uid));
            msg.remote_config_status = session.remote.to_proto();
        }
        if session.full || generation != session.reported_generation {
            msg.effective_config = Some(proto::EffectiveConfig {
                config_map: Some(super::effective::config_map(&self.dir)),
            });
            session.reported_generation = generation;
        }
        if let Some(p) = session.pending_status.take() {
            msg.remote_config_status = Some(p);
        }
        session.full = false;
        msg
    }

    /// Acts on an answer. `true`: send again now (the server asked for the
    /// full state, or an offer's outcome is to be reported).
    async fn handle(
        &self,
        s: &OpampSettings,
        session: &mut Session,
        uid: [u8; 16],
        answer: proto::ServerToAgent,
    ) -> bool {
        let mut again = false;
        if let Some(id) = answer.agent_identification {
            match <[u8; 16]>::try_from(id.new_instance_uid.as_slice()) {
                Ok(new) if new != uid => match identity::store(&s.uid_file, &new) {
                    Ok(()) => {
                        info!(self.log, "OpAMP server assigned a new instance UID"; "instance_uid" => %uuid::Uuid::from_bytes(new));
                        session.uid = Some(new);
                        session.full = true;
                        again = true;
                    }
                    Err(e) => error!(self.log, "cannot keep the new instance UID"; "error" => %e),
                },
                Ok(_) => {}
                Err(_) => warn!(
                    self.log,
                    "OpAMP server sent an instance UID that is not 16 bytes; ignored"
                ),
            }
        }
        if answer.flags & proto::ServerToAgentFlags::ReportFullState as u64 != 0 {
            session.full = true;
            again = true;
        }
        if let Some(offer) = answer.remote_config {
            if self.offer(s, session, uid, offer).await {
                again = true;
            }
        }
        again
    }

    /// Applies an offer unless its hash is the last one seen. `true` when
    /// there is an outcome to report.
    async fn offer(
        &self,
        s: &OpampSettings,
        session: &mut Session,
        uid: [u8; 16],
        offer: proto::AgentRemoteConfig,
    ) -> bool {
        let map = offer.config.unwrap_or_default();
        let hash = if offer.config_hash.is_empty() {
            content_hash(&map)
        } else {
            offer.config_hash.clone()
        };
        let hash_hex = apply::hex(&hash);
        if hash_hex == session.remote.hash {
            debug!(self.log, "remote config already handled"; "hash" => %hash_hex);
            return false;
        }
        info!(self.log, "remote config offered"; "hash" => %hash_hex, "files" => map.config_map.len());
        // APPLYING first, in a message of its own.
        let applying = proto::RemoteConfigStatus {
            last_remote_config_hash: hash.clone(),
            status: proto::RemoteConfigStatuses::Applying as i32,
            error_message: String::new(),
        };
        session.pending_status = Some(applying);
        let msg = self.message(s, session, uid).await;
        if let Err(e) = post(s, msg.encode_to_vec()).await {
            debug!(self.log, "could not report APPLYING"; "error" => %e);
        }
        let before = self.generation();
        let outcome = match apply::validate(&self.dir, &self.registry, &map, &session.remote.files)
        {
            Ok(change) => match apply::write(&self.dir, &change) {
                Ok(()) => self.reload_applied(before).await.map(|()| change.files),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        let state = match outcome {
            Ok(files) => {
                info!(self.log, "remote config applied"; "hash" => %hash_hex, "files" => files.len());
                RemoteState {
                    hash: hash_hex,
                    status: "applied".into(),
                    error: String::new(),
                    files,
                }
            }
            Err(e) => {
                error!(self.log, "remote config refused; keeping the running one"; "hash" => %hash_hex, "error" => %e);
                RemoteState {
                    hash: hash_hex,
                    status: "failed".into(),
                    error: e,
                    // Still the files of the applied offer.
                    files: std::mem::take(&mut session.remote.files),
                }
            }
        };
        if let Err(e) = state.store(&s.state_file) {
            error!(self.log, "cannot keep the remote config state"; "file" => %s.state_file.display(), "error" => %e);
        }
        session.pending_status = state.to_proto();
        session.remote = state;
        true
    }

    /// Reloads through the reloader and waits until it applied a new
    /// generation (or rejected the files).
    async fn reload_applied(&self, before: (u64, u64, String)) -> Result<(), String> {
        self.reloader.reload("opamp");
        let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
        loop {
            let (generation, attempts, result) = self.generation();
            if generation > before.0 {
                return Ok(());
            }
            if attempts > before.1 && result != "ok" && result != before.2 {
                return Err(format!(
                    "written, but the reload rejected it: {result}; the previous configuration keeps running"
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "written, but not applied by the reloader within {} s (last result: {result})",
                    RELOAD_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `d` times a random factor in `lo..hi`.
fn jitter(d: Duration, lo: f64, hi: f64) -> Duration {
    d.mul_f64(rand::random_range(lo..hi))
}

/// A hash for an offer that came without one: md5 of the sorted names and
/// bodies.
fn content_hash(map: &proto::AgentConfigMap) -> Vec<u8> {
    use md5::{Digest, Md5};
    let mut keys: Vec<&String> = map.config_map.keys().collect();
    keys.sort();
    let mut h = Md5::new();
    for k in keys {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        let body = &map.config_map[k].body;
        h.update((body.len() as u64).to_le_bytes());
        h.update(body);
    }
    h.finalize().to_vec()
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &isahc::http::HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = at.timestamp() - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// One POST of an `AgentToServer`.
pub async fn post(s: &OpampSettings, body: Vec<u8>) -> Result<proto::ServerToAgent, OpampError> {
    if !crate::config::is_https(&s.endpoint) && !s.insecure {
        // Refused by validation already; kept here so no path skips it.
        return Err(OpampError::BadFile {
            path: PathBuf::from("opamp.endpoint"),
            reason: "plain http:// needs `opamp.insecure: true`".into(),
        });
    }
    let mut request = isahc::Request::post(&s.endpoint)
        .header("Content-Type", "application/x-protobuf")
        .header("Accept-Encoding", "gzip")
        .timeout(s.timeout)
        .connect_timeout(s.timeout)
        // A redirect could lead to plain http: not followed.
        .redirect_policy(RedirectPolicy::None)
        .automatic_decompression(false);
    for (name, value) in &s.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(ca) = &s.ca_file {
        request = request.tls_config(
            TlsConfig::builder()
                .trust_store(TrustStore::from_file(ca))
                .build(),
        );
    }
    let request = request.body(body).map_err(isahc::Error::from)?;
    let mut response = isahc::send_async(request).await?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        let hint = match status {
            429 | 503 => retry_after(response.headers()),
            _ => None,
        };
        return Err(OpampError::Status {
            status,
            retry_after: hint,
        });
    }
    let gzip = response
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let mut raw = Vec::new();
    response
        .body_mut()
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut raw)
        .await
        .map_err(OpampError::Read)?;
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(OpampError::TooLarge);
    }
    let bytes = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_RESPONSE_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(OpampError::Read)?;
        if out.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(OpampError::TooLarge);
        }
        out
    } else {
        raw
    };
    let answer = proto::ServerToAgent::decode(bytes.as_slice())?;
    if let Some(err) = &answer.error_response {
        let hint =
            err.details
                .as_ref()
                .map(|proto::server_error_response::Details::RetryInfo(r)| {
                    Duration::from_nanos(r.retry_after_nanoseconds)
                });
        let kind = proto::ServerErrorResponseType::try_from(err.r#type)
            .map(|t| t.as_str_name())
            .unwrap_or("unknown");
        return Err(OpampError::Server {
            message: format!("{kind}: {}", err.error_message),
            retry_after: hint,
        });
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let mut h = isahc::http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = chrono::Utc::now() + chrono::Duration::seconds(120);
        h.insert("retry-after", later.to_rfc2822().parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d <= Duration::from_secs(120) && d >= Duration::from_secs(100),
            "{d:?}"
        );
        h.insert(
            "retry-after",
            "Thu, 01 Jan 1970 00:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date: now");
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn content_hash_depends_on_names_and_bodies() {
        let map = |pairs: &[(&str, &str)]| proto::AgentConfigMap {
            config_map: pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        proto::AgentConfigFile {
                            body: v.as_bytes().to_vec(),
                            content_type: String::new(),
                        },
                    )
                })
                .collect(),
        };
        let a = content_hash(&map(&[("main.yaml", "open: [cpu]"), ("host.yaml", "")]));
        let b = content_hash(&map(&[("host.yaml", ""), ("main.yaml", "open: [cpu]")]));
        assert_eq!(a, b, "order does not matter");
        assert_ne!(
            a,
            content_hash(&map(&[("main.yaml", "open: [mem]"), ("host.yaml", "")]))
        );
        assert_ne!(
            a,
            content_hash(&map(&[("main.yaml", "open: [cpu]host.yaml")]))
        );
    }
}

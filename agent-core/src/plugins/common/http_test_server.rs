//! A loopback HTTP/1.1 server for the HTTP outputs' tests: records every
//! request (method, target, headers, decoded body) and answers with what the
//! test's responder returns.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The body as sent (gzip still applied).
    pub raw_body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, gunzipped when `Content-Encoding: gzip`.
    pub fn body(&self) -> String {
        if self.header("content-encoding") == Some("gzip") {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&self.raw_body[..])
                .read_to_string(&mut s)
                .expect("valid gzip body");
            s
        } else {
            String::from_utf8(self.raw_body.clone()).expect("utf-8 body")
        }
    }
}

type Responder = Box<dyn FnMut(&Recorded) -> (u16, String) + Send>;

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    responder: Arc<Mutex<Responder>>,
}

impl TestServer {
    /// Starts on a free 127.0.0.1 port; answers 204 until told otherwise.
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let responder: Arc<Mutex<Responder>> =
            Arc::new(Mutex::new(Box::new(|_| (204, String::new()))));
        let (r2, resp2) = (requests.clone(), responder.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (r3, resp3) = (r2.clone(), resp2.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &r3, &resp3);
                });
            }
        });
        TestServer {
            addr,
            requests,
            responder,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn respond(&self, f: impl FnMut(&Recorded) -> (u16, String) + Send + 'static) {
        *self.responder.lock().unwrap() = Box::new(f);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(
    stream: TcpStream,
    requests: &Mutex<Vec<Recorded>>,
    responder: &Mutex<Responder>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        if get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut raw_body = vec![0u8; len];
        r.read_exact(&mut raw_body)?;
        let rec = Recorded {
            method,
            target,
            headers,
            raw_body,
        };
        let (status, body) = (responder.lock().unwrap())(&rec);
        requests.lock().unwrap().push(rec);
        write!(
            w,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        w.flush()?;
    }
}

//! A `qgc serve` process on a loopback port and a plain HTTP/1.1 client over `TcpStream` (no
//! client library: the tests send malformed requests and hang up mid-stream on purpose).

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Everything it wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// `qgc serve ARGS --port 0`, waiting (up to 3 minutes) for its "listening on" line.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(crate::common::qgc_bin())
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .current_dir(crate::common::root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qgc starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                l.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(addr) => Server { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                panic!("qgc serve did not start; it said:\n{}", log.lock().unwrap());
            }
        }
    }

    /// Sends one request (`Connection: close`); returns the status and the body.
    pub fn raw(&self, head: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
        let req =
            format!("{head}\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", self.addr, body.len());
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        parse_response(&out)
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.raw(&format!("GET {path} HTTP/1.1"), b"")
    }

    /// POST `body` (JSON) to `path`; the status and the body parsed as JSON.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.post_raw(path, body.to_string().as_bytes());
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        (status, v)
    }

    /// POST raw bytes to `path`.
    pub fn post_raw(&self, path: &str, body: &[u8]) -> (u16, String) {
        self.raw(&format!("POST {path} HTTP/1.1\r\nContent-Type: application/json"), body)
    }

    /// POST a streaming request; returns the `data:` payloads in order (`[DONE]` included).
    pub fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let (status, text) = self.post_raw(path, body.to_string().as_bytes());
        assert_eq!(status, 200, "{text}");
        sse_data(&text)
    }

    /// Opens a streaming request and reads until `events` data lines arrived; returns the open
    /// socket (drop it to hang up).
    pub fn stream_partially(&self, path: &str, body: &Value, events: usize) -> TcpStream {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let body = body.to_string();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(&seen).matches("data: ").count() < events {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        s
    }

    /// The value of metric sample `name` (first line starting with it), 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls `cond` every 50 ms for up to `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, mut cond: impl FnMut(&Server) -> bool) {
        let t = Instant::now();
        while !cond(self) {
            assert!(t.elapsed().as_secs() < secs, "timed out waiting for {what}; log:\n{}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and body of an HTTP/1.1 response (chunked transfer decoded).
pub fn parse_response(raw: &[u8]) -> (u16, String) {
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..at]).to_string();
    let mut body = &raw[at + 4..];
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    if !chunked {
        return (status, String::from_utf8_lossy(body).to_string());
    }
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&body[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || body.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + n]);
        body = &body[(eol + 4 + n).min(body.len())..];
    }
    (status, String::from_utf8_lossy(&out).to_string())
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
}

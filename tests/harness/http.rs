//! Plain HTTP exchanges through the real `curl`, for the HTTP surface's
//! tests (the JSON gateway, health and metrics endpoints).

use std::io::Write;
use std::process::{Command, Stdio};

/// One request: method, path, optional body, extra curl arguments (headers
/// as `-H`, TLS files).
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: Option<&'a [u8]>,
    pub args: &'a [String],
}

impl<'a> Request<'a> {
    pub fn post(path: &'a str, body: &'a [u8]) -> Request<'a> {
        Request {
            method: "POST",
            path,
            body: Some(body),
            args: &[],
        }
    }

    pub fn get(path: &'a str) -> Request<'a> {
        Request {
            method: "GET",
            path,
            body: None,
            args: &[],
        }
    }

    pub fn with_args(self, args: &'a [String]) -> Request<'a> {
        Request { args, ..self }
    }
}

/// What curl got: `Ok((status, body))`, or `Err(curl's exit code and
/// message)` when no HTTP answer came (refused TLS, closed connection).
pub fn curl(base: &str, req: &Request) -> Result<(u16, String), (i32, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "--max-time", "20", "-X", req.method, "-o", "-", "-w", "\n%{http_code}"]);
    cmd.args(req.args);
    if req.body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    cmd.arg(format!("{base}{}", req.path));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(b) = req.body {
            // curl may stop reading a body the server refused early.
            let _ = stdin.write_all(b);
        }
    }
    let out = child.wait_with_output().expect("curl output");
    if !out.status.success() {
        return Err((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    Ok((status.trim().parse().expect("status"), body.to_string()))
}

/// [`curl`] that must get an HTTP answer.
#[track_caller]
pub fn exchange(base: &str, req: &Request) -> (u16, String) {
    curl(base, req).unwrap_or_else(|(code, e)| panic!("curl {} {}: exit {code}: {e}", req.method, req.path))
}

/// A JSON POST; the status and the parsed reply.
#[track_caller]
pub fn post_json(base: &str, path: &str, body: &serde_json::Value, headers: &[String]) -> (u16, serde_json::Value) {
    let text = body.to_string();
    let (status, reply) = exchange(base, &Request::post(path, text.as_bytes()).with_args(headers));
    let value = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{path}: {e}: {reply:?}"));
    (status, value)
}

/// Standard base64, as the gateway carries bytes.
pub fn b64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

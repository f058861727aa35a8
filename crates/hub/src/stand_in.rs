//! A small stand-in for the Hugging Face hub on 127.0.0.1, for tests. It
//! answers as the hub does (checked against huggingface_hub's client and
//! the hub's documented behaviour):
//!
//! - `GET /api/models/{repo}`: `sha`, `siblings`, `private`, `gated`;
//! - `GET /api/models/{repo}/tree/{rev}`: `type`, `oid`, `size`, `path`, `lfs`;
//! - `HEAD`/`GET /{repo}/resolve/{rev}/{file}`: an LFS file answers `302` to
//!   `http://localhost:PORT/cdn/{sha256}` (another origin) with `X-Linked-Etag`, `X-Linked-Size` and
//!   `X-Repo-Commit`; another file answers `200` with its git blob sha1 as
//!   `ETag`; `Range` is honoured;
//! - errors with `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`,
//!   `EntryNotFound`, `GatedRepo`) and a JSON `{"error": ...}` body.
//!
//! Every connection is answered once and closed; the accept loop stops when
//! the stand-in is dropped.

use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// A token that reads private and gated repositories.
pub const TOKEN: &str = "hf_standInTokenWithFullAccess000000000000";
/// A valid token whose account was not granted gated repositories and
/// cannot read private ones.
pub const TOKEN_NOT_GRANTED: &str = "hf_standInTokenNotGranted00000000000000000";

#[derive(Clone, Debug)]
pub struct StandInFile {
    pub path: String,
    pub data: Vec<u8>,
    /// Stored with git LFS (hashed with sha256, served through the CDN).
    pub lfs: bool,
    /// Serve other bytes than the ones the hash describes.
    pub corrupt: bool,
    /// Close the first download's connection after this many bytes.
    pub cut_first_after: Option<usize>,
}

impl StandInFile {
    pub fn lfs(path: &str, data: Vec<u8>) -> Self {
        StandInFile {
            path: path.to_string(),
            data,
            lfs: true,
            corrupt: false,
            cut_first_after: None,
        }
    }

    pub fn plain(path: &str, data: Vec<u8>) -> Self {
        StandInFile {
            lfs: false,
            ..Self::lfs(path, data)
        }
    }

    pub fn corrupted(mut self) -> Self {
        self.corrupt = true;
        self
    }

    pub fn cut_first_after(mut self, n: usize) -> Self {
        self.cut_first_after = Some(n);
        self
    }

    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.data))
    }

    /// git's blob id: sha1 of `blob {len}\0` and the bytes.
    pub fn git_sha1(&self) -> String {
        let mut h = Sha1::new();
        h.update(format!("blob {}\0", self.data.len()).as_bytes());
        h.update(&self.data);
        hex(&h.finalize())
    }

    /// The name the hub cache gives this file's blob.
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.git_sha1()
        }
    }

    fn served(&self) -> Vec<u8> {
        let mut d = self.data.clone();
        if self.corrupt {
            if let Some(b) = d.get_mut(self.data.len() / 2) {
                *b ^= 0x5a;
            }
        }
        d
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Readable with [`TOKEN`] only.
    Private,
    /// Listed to anyone, downloadable with [`TOKEN`] only.
    Gated,
}

#[derive(Clone, Debug)]
pub struct StandInRepo {
    pub id: String,
    pub commit: String,
    pub files: Vec<StandInFile>,
    pub access: Access,
}

impl StandInRepo {
    pub fn new(id: &str, commit: &str, files: Vec<StandInFile>) -> Self {
        StandInRepo {
            id: id.to_string(),
            commit: commit.to_string(),
            files,
            access: Access::Public,
        }
    }

    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }
}

/// One request as the stand-in saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    /// The decoded path, without the query.
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

struct Shared {
    endpoint: String,
    /// The same server under another name, so that it is another origin
    /// as the hub's CDN is (a client must not send it the token).
    cdn: String,
    repos: Vec<StandInRepo>,
    log: Mutex<Vec<Logged>>,
    cut_done: Mutex<HashSet<String>>,
}

pub struct StandIn {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    pub fn start(repos: Vec<StandInRepo>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            endpoint: format!("http://{addr}"),
            cdn: format!("http://localhost:{}", addr.port()),
            repos,
            log: Mutex::new(Vec::new()),
            cut_done: Mutex::new(HashSet::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let _ = serve(&s, stream);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(StandIn {
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops accepting connections; the port is closed when this returns.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close.
    cut_after: Option<usize>,
}

impl Response {
    fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_after: None,
        }
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }

    fn json(status: u16, v: &serde_json::Value) -> Self {
        let mut r = Response::new(status).header("Content-Type", "application/json");
        r.body = v.to_string().into_bytes();
        r
    }

    fn error(status: u16, code: Option<&str>, message: &str) -> Self {
        let r = Response::json(status, &serde_json::json!({ "error": message }));
        match code {
            Some(c) => r.header("X-Error-Code", c),
            None => r,
        }
    }
}

fn serve(shared: &Shared, mut stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let Some(req) = read_request(&mut stream)? else {
        return Ok(());
    };
    shared
        .log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Logged {
            method: req.method.clone(),
            path: req.path.clone(),
            range: req.header("Range").map(str::to_string),
            authorization: req.header("Authorization").map(str::to_string),
        });
    let resp = route(shared, &req);
    write_response(&mut stream, &req, resp)
}

fn read_request(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/");
    let path = percent_decode(target.split('?').next().unwrap_or("/"));
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Ok(Some(Request {
        method,
        path,
        headers,
    }))
}

fn write_response(stream: &mut TcpStream, req: &Request, resp: Response) -> io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", resp.status);
    let has_len = resp
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("Content-Length"));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    if req.method != "HEAD" {
        let n = resp
            .cut_after
            .unwrap_or(resp.body.len())
            .min(resp.body.len());
        stream.write_all(&resp.body[..n])?;
    }
    stream.flush()?;
    stream.shutdown(Shutdown::Both)
}

fn route(shared: &Shared, req: &Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::error(405, None, "method not allowed");
    }
    let path = req.path.trim_start_matches('/');
    if let Some(sha) = path.strip_prefix("cdn/") {
        return cdn(shared, req, sha);
    }
    if let Some(rest) = path.strip_prefix("api/models/") {
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        let repo_id = format!(
            "{}/{}",
            parts.first().unwrap_or(&""),
            parts.get(1).unwrap_or(&"")
        );
        let repo = match find_repo(shared, req, &repo_id, true) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        return match (parts.get(2), parts.get(3)) {
            (None, _) => model_info(repo),
            (Some(&"tree"), Some(rev)) => {
                if *rev != "main" && *rev != repo.commit {
                    return Response::error(404, Some("RevisionNotFound"), "Invalid rev id");
                }
                tree(repo)
            }
            _ => Response::error(404, None, "Not Found"),
        };
    }
    // {org}/{name}/resolve/{rev}/{file...}
    let parts: Vec<&str> = path.splitn(5, '/').collect();
    if parts.len() == 5 && parts[2] == "resolve" {
        let repo_id = format!("{}/{}", parts[0], parts[1]);
        let repo = match find_repo(shared, req, &repo_id, false) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        if parts[3] != "main" && parts[3] != repo.commit {
            return Response::error(404, Some("RevisionNotFound"), "Invalid rev id: ");
        }
        let Some(f) = repo.files.iter().find(|f| f.path == parts[4]) else {
            return Response::error(404, Some("EntryNotFound"), "Entry not found");
        };
        if f.lfs {
            let sha = f.sha256();
            return Response::new(302)
                .header(
                    "Location",
                    format!("{}/cdn/{sha}?expires=1&signature=x", shared.cdn),
                )
                .header("X-Repo-Commit", repo.commit.clone())
                .header("X-Linked-Etag", format!("\"{sha}\""))
                .header("X-Linked-Size", f.data.len().to_string())
                .header("ETag", format!("\"{sha}\""));
        }
        return body(shared, req, f)
            .header("X-Repo-Commit", repo.commit.clone())
            .header("ETag", format!("\"{}\"", f.git_sha1()));
    }
    Response::error(404, None, "Not Found")
}

/// The hub's access rules: a missing repository and a private one look
/// the same without a token (401 `RepoNotFound`).
fn find_repo<'a>(
    shared: &'a Shared,
    req: &Request,
    id: &str,
    listing: bool,
) -> Result<&'a StandInRepo, Response> {
    let auth = req.header("Authorization");
    let token = auth.and_then(|a| a.strip_prefix("Bearer "));
    let known = matches!(token, Some(TOKEN) | Some(TOKEN_NOT_GRANTED));
    if token.is_some() && !known {
        return Err(Response::error(
            401,
            None,
            "Invalid credentials in Authorization header",
        ));
    }
    let repo = shared.repos.iter().find(|r| r.id == id);
    let not_found = || {
        let status = if known { 404 } else { 401 };
        Response::error(status, Some("RepoNotFound"), "Repository not found")
    };
    let Some(repo) = repo else {
        return Err(not_found());
    };
    match repo.access {
        Access::Public => Ok(repo),
        Access::Private if token == Some(TOKEN) => Ok(repo),
        Access::Private => Err(not_found()),
        Access::Gated if listing || token == Some(TOKEN) => Ok(repo),
        Access::Gated if known => Err(Response::error(
            403,
            Some("GatedRepo"),
            &format!(
                "Access to model {id} is restricted and you are not in the authorized list. \
                 Visit {}/{id} to ask for access.",
                shared.endpoint
            ),
        )),
        Access::Gated => Err(Response::error(
            401,
            Some("GatedRepo"),
            &format!(
                "Access to model {id} is restricted. You must have access to it and be \
                 authenticated to access it. Please log in."
            ),
        )),
    }
}

fn model_info(repo: &StandInRepo) -> Response {
    let siblings: Vec<_> = repo
        .files
        .iter()
        .map(|f| serde_json::json!({ "rfilename": f.path }))
        .collect();
    Response::json(
        200,
        &serde_json::json!({
            "_id": "0123456789abcdef01234567",
            "id": repo.id,
            "modelId": repo.id,
            "sha": repo.commit,
            "private": repo.access == Access::Private,
            "gated": if repo.access == Access::Gated { serde_json::json!("manual") } else { serde_json::json!(false) },
            "siblings": siblings,
        }),
    )
}

fn tree(repo: &StandInRepo) -> Response {
    let items: Vec<_> = repo
        .files
        .iter()
        .map(|f| {
            let mut v = serde_json::json!({
                "type": "file",
                "oid": f.git_sha1(),
                "size": f.data.len(),
                "path": f.path,
            });
            if f.lfs {
                v["lfs"] = serde_json::json!({
                    "oid": f.sha256(),
                    "size": f.data.len(),
                    "pointerSize": 134,
                });
            }
            v
        })
        .collect();
    Response::json(200, &serde_json::Value::Array(items))
}

fn cdn(shared: &Shared, req: &Request, sha: &str) -> Response {
    let file = shared
        .repos
        .iter()
        .flat_map(|r| r.files.iter())
        .find(|f| f.lfs && f.sha256() == sha);
    match file {
        Some(f) => body(shared, req, f),
        None => Response::error(404, None, "no such object"),
    }
}

/// A file's bytes, whole or from a `Range: bytes=START-[END]`.
fn body(shared: &Shared, req: &Request, f: &StandInFile) -> Response {
    let data = f.served();
    let len = data.len();
    let mut resp = match req.header("Range").and_then(parse_range) {
        Some((start, _)) if start >= len => {
            return Response::new(416).header("Content-Range", format!("bytes */{len}"));
        }
        Some((start, end)) => {
            let end = end.unwrap_or(len - 1).min(len - 1);
            let mut r =
                Response::new(206).header("Content-Range", format!("bytes {start}-{end}/{len}"));
            r.body = data[start..=end].to_vec();
            r
        }
        None => {
            let mut r = Response::new(200);
            r.body = data;
            r
        }
    };
    resp = resp
        .header("Accept-Ranges", "bytes")
        .header("Content-Type", "application/octet-stream");
    if req.method == "GET" {
        if let Some(n) = f.cut_first_after {
            let mut done = shared
                .cut_done
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if done.insert(f.path.clone()) {
                resp.cut_after = Some(n);
            }
        }
    }
    resp
}

fn parse_range(v: &str) -> Option<(usize, Option<usize>)> {
    let r = v.trim().strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = if b.trim().is_empty() {
        None
    } else {
        Some(b.trim().parse().ok()?)
    };
    Some((start, end))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let digit = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (digit(b[i + 1]), digit(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

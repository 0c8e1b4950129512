//! Runs the real `outrigger` binary: writes its bootstrap, starts it, waits until it is ready,
//! finds its listeners through the admin API, captures stdout (access logs) and stderr, and
//! kills it when dropped.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the proxy may take to start (debug build, loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `outrigger` binary: `OUTRIGGER_BIN`, or built (once per process) with cargo.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("OUTRIGGER_BIN") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "OUTRIGGER_BIN={} is not a file", p.display());
            return p;
        }
        build_with_cargo("outrigger-proxy", "outrigger")
    })
}

/// The `outrigger-xds` binary: `OUTRIGGER_XDS_BIN`, or built (once per process) with cargo.
pub fn xds_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("OUTRIGGER_XDS_BIN") {
        Some(p) => PathBuf::from(p),
        None => build_with_cargo("outrigger-xds", "outrigger-xds"),
    })
}

/// Builds a binary into the test binary's own target directory and profile; returns its path.
fn build_with_cargo(package: &str, bin: &str) -> PathBuf {
    // The test executable lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("test binary is in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--quiet", "-p", package, "--bin", bin, "--message-format=json-render-diagnostics"])
        .env("CARGO_TARGET_DIR", target_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().expect("running cargo to build outrigger (or set OUTRIGGER_BIN)");
    assert!(out.status.success(), "cargo build -p outrigger-proxy failed: {}", out.status);
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no {bin} executable"));
    assert!(exe.is_file(), "{} missing after build", exe.display());
    exe
}

/// A fresh, empty temporary directory, removed by whoever owns it.
pub fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let d = std::env::temp_dir().join(format!(
        "outrigger-e2e-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

pub struct Proxy {
    child: Child,
    dir: PathBuf,
    pub admin: SocketAddr,
    listeners: Vec<(String, SocketAddr)>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    exit: Option<ExitStatus>,
}

fn capture_lines(r: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line);
        }
    });
}

fn capture_text(mut r: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    });
}

impl Proxy {
    /// Starts the proxy on a JSON bootstrap with `--concurrency 1`.
    pub fn start(bootstrap: &Value) -> Proxy {
        Proxy::start_file("bootstrap.json", &serde_json::to_string_pretty(bootstrap).unwrap(), &[])
    }

    /// Starts the proxy on `contents` written as `file_name` (its extension picks YAML or JSON).
    pub fn start_file(file_name: &str, contents: &str, extra_args: &[&str]) -> Proxy {
        let dir = temp_dir();
        let cfg = dir.join(file_name);
        std::fs::write(&cfg, contents).expect("write bootstrap");
        let mut args = vec!["-c".to_string(), cfg.display().to_string()];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        Proxy::launch(dir, &args, &[], None)
    }

    /// As [`Proxy::start`], in a private mount namespace (`unshare -m`) whose `/etc/hosts` is
    /// `hosts` (bind-mounted): the proxy's system resolver answers from that file, which the test
    /// may rewrite in place (same inode) to move a name. Needs root.
    pub fn start_with_hosts(bootstrap: &Value, hosts: &Path) -> Proxy {
        let dir = temp_dir();
        let cfg = dir.join("bootstrap.json");
        std::fs::write(&cfg, serde_json::to_string_pretty(bootstrap).unwrap()).expect("write bootstrap");
        let mut cmd = Command::new("unshare");
        // unshare execs sh, which execs the proxy: the child's pid is the proxy's.
        cmd.args(["-m", "--propagation", "private", "sh", "-c", r#"mount --bind "$0" /etc/hosts && exec "$@""#])
            .arg(hosts)
            .arg(binary())
            .arg("-c")
            .arg(&cfg);
        Proxy::launch_cmd(cmd, dir)
    }

    /// Starts `outrigger <args>` (a subcommand such as `sidecar ...`) with extra environment.
    pub fn start_args(args: &[&str], env: &[(&str, &str)]) -> Proxy {
        Proxy::start_args_as(args, env, None)
    }

    /// As `start_args`, running as `uid` (the sidecar's own user, whose traffic capture exempts).
    pub fn start_args_as(args: &[&str], env: &[(&str, &str)], uid: Option<u32>) -> Proxy {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let dir = temp_dir();
        if uid.is_some() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod temp dir");
        }
        Proxy::launch(dir, &args, env, uid)
    }

    fn launch(dir: PathBuf, args: &[String], env: &[(&str, &str)], uid: Option<u32>) -> Proxy {
        let mut cmd = Command::new(binary());
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        cmd.args(args).envs(env.iter().copied());
        Proxy::launch_cmd(cmd, dir)
    }

    /// Runs `cmd` (the proxy, with its arguments so far) with an admin address file in `dir` and
    /// `--concurrency 1` unless given, then waits until it is ready.
    fn launch_cmd(cmd: Command, dir: PathBuf) -> Proxy {
        Proxy::launch_until(cmd, dir, "ready", |a| matches!(http_request(a, "GET", "/ready"), Ok((200, _))))
    }

    /// As [`Proxy::start`], without waiting for `/ready`: returns once the admin server answers
    /// and some listener is bound (a dynamic proxy may serve before it is initialised).
    pub fn start_before_ready(bootstrap: &Value) -> Proxy {
        let dir = temp_dir();
        let cfg = dir.join("bootstrap.json");
        std::fs::write(&cfg, serde_json::to_string_pretty(bootstrap).unwrap()).expect("write bootstrap");
        let mut cmd = Command::new(binary());
        cmd.arg("-c").arg(&cfg);
        Proxy::launch_until(cmd, dir, "a listener bound", |a| listeners_of(a).is_some_and(|l| !l.is_empty()))
    }

    /// As [`Proxy::start`], returning once the admin port answers, ready or not (a proxy whose
    /// control plane never answers).
    pub fn start_unready(bootstrap: &Value) -> Proxy {
        let dir = temp_dir();
        let cfg = dir.join("bootstrap.json");
        std::fs::write(&cfg, serde_json::to_string_pretty(bootstrap).unwrap()).expect("write bootstrap");
        let mut cmd = Command::new(binary());
        cmd.arg("-c").arg(&cfg);
        Proxy::launch_until(cmd, dir, "an admin answer", |a| http_request(a, "GET", "/ready").is_ok())
    }

    /// Runs the proxy and waits until `up(admin address)`.
    fn launch_until(mut cmd: Command, dir: PathBuf, what: &str, up: fn(SocketAddr) -> bool) -> Proxy {
        let admin_path = dir.join("admin-address");
        let given_concurrency = cmd.get_args().any(|a| a.to_string_lossy().starts_with("--concurrency"));
        cmd.arg("--admin-address-path").arg(&admin_path);
        if !given_concurrency {
            cmd.args(["--concurrency", "1"]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn outrigger");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        capture_lines(child.stdout.take().unwrap(), stdout.clone());
        capture_text(child.stderr.take().unwrap(), stderr.clone());

        let deadline = Instant::now() + START_TIMEOUT;
        let admin = loop {
            if let Ok(Some(st)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("outrigger exited during start-up ({st}); stderr:\n{}", stderr.lock().unwrap());
            }
            let addr = std::fs::read_to_string(&admin_path).ok().and_then(|s| s.trim().parse::<SocketAddr>().ok());
            if let Some(a) = addr {
                if up(a) {
                    break a;
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("outrigger: no {what} after {START_TIMEOUT:?}; stderr:\n{}", stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        let listeners = listeners_of(admin).expect("admin /listeners");
        Proxy { child, dir, admin, listeners, stdout, stderr, exit: None }
    }

    /// The bound address of a listener, by name.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {listener:?} in {:?}", self.listeners))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_request(self.admin, "GET", path).unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    pub fn admin_post(&self, path: &str) -> (u16, String) {
        http_request(self.admin, "POST", path).unwrap_or_else(|e| panic!("admin POST {path}: {e}"))
    }

    /// The value of one Prometheus series, e.g.
    /// `envoy_cluster_upstream_rq_total{envoy_cluster_name="app"}`; 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (status, body) = self.admin_get("/stats/prometheus");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .map(|v| v.trim().parse().expect("metric value"))
            .unwrap_or(0.0)
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Every access-log entry written so far (JSON lines on stdout).
    pub fn access_logs(&self) -> Vec<Value> {
        self.stdout_lines().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
    }

    /// Waits (bounded) for an access-log entry that satisfies `pred`.
    pub async fn access_log(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let r = crate::eventually(what, crate::WAIT, || self.access_logs().into_iter().find(&pred)).await;
        r
    }

    /// GET `path` (host `x`) on listener `http`, on a new connection.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> crate::Resp {
        crate::client::get_h1(self.addr("http"), "x", path, headers).await
    }

    /// The response flags of every access-log entry for `path`, in order.
    pub fn response_flags_for(&self, path: &str) -> Vec<String> {
        self.access_logs()
            .iter()
            .filter(|l| l["path"] == path)
            .map(|l| l["response_flags"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// An endpoint's `/clusters` health flags (`healthy`, `/failed_outlier_check`, ...), or
    /// `absent`.
    pub fn health_flags(&self, cluster: &str, addr: SocketAddr) -> String {
        let (_, body) = self.admin_get("/clusters");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{cluster}::{addr}::health_flags::")))
            .unwrap_or("absent")
            .to_string()
    }

    /// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM, ...).
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        read_status_kib(self.pid(), field).unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// Starts sampling the process's VmRSS every 10 ms on a thread of its own.
    pub fn rss_sampler(&self) -> RssSampler {
        let pid = self.pid();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = 0u64;
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = read_status_kib(pid, "VmRSS") {
                    max = max.max(kib);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            max
        });
        RssSampler { stop, handle }
    }

    /// Names of the process's threads.
    pub fn thread_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) {
            for t in rd.flatten() {
                if let Ok(c) = std::fs::read_to_string(t.path().join("comm")) {
                    out.push(c.trim().to_string());
                }
            }
        }
        out
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    /// Waits (blocking, bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.exit {
            return s;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(s);
                return s;
            }
            if Instant::now() > deadline {
                panic!("outrigger did not exit within {timeout:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Async form of [`Proxy::wait_exit`], for tests with work in flight on their runtime.
    pub async fn wait_exit_async(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(s);
                return s;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("outrigger did not exit within {timeout:?}; stderr:\n{}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The bound listeners, from the admin API's `/listeners?format=json`.
fn listeners_of(admin: SocketAddr) -> Option<Vec<(String, SocketAddr)>> {
    let (status, body) = http_request(admin, "GET", "/listeners?format=json").ok()?;
    assert_eq!(status, 200, "/listeners: {body}");
    let v: Value = serde_json::from_str(&body).expect("/listeners JSON");
    let listeners = v["listener_statuses"]
        .as_array()
        .expect("listener_statuses")
        .iter()
        .map(|l| {
            let sa = &l["local_address"]["socket_address"];
            let ip: std::net::IpAddr = sa["address"].as_str().unwrap().parse().unwrap();
            let port = sa["port_value"].as_u64().unwrap() as u16;
            (l["name"].as_str().unwrap().to_string(), SocketAddr::new(ip, port))
        })
        .collect();
    Some(listeners)
}

fn read_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// See [`Proxy::rss_sampler`].
pub struct RssSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    /// Stops sampling; returns the largest VmRSS seen, in KiB.
    pub fn max_kib(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler thread")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the proxy on a config that is expected to make it exit (bad config, bad flags) and returns
/// its output; kills it and panics if it is still running after 30 s.
pub fn run_to_exit(file_name: &str, contents: &str, args: &[&str]) -> Output {
    let dir = temp_dir();
    let mut cmd = Command::new(binary());
    if !file_name.is_empty() {
        let cfg = dir.join(file_name);
        std::fs::write(&cfg, contents).expect("write bootstrap");
        cmd.arg("-c").arg(&cfg);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn outrigger");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("outrigger kept running on a config that should make it exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// A minimal blocking HTTP/1.1 request (admin API): returns status and body.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request_to(addr, method, "admin", path)
}

/// As [`http_request`], with the given `Host`.
pub fn http_request_to(addr: SocketAddr, method: &str, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {head}")))?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

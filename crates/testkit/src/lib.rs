//! Test support shared by the integration and interop suites.
//!
//! - A needed service or tool that is missing makes the test fail loudly when `CI=true`, and skip with a notice
//!   otherwise ([`require`]).
//! - Each test claims its own Redis database number (1 to 15) on the local server with a lease key in db 0, and
//!   flushes only that database ([`RedisDb`]).
//! - Each AMQP test gets its own RabbitMQ virtual host, deleted afterwards ([`AmqpVhost`]).
//! - Child processes (Rust and Python workers, Flower) are killed when the guard drops ([`Child`]), and their
//!   output goes to a log file under the target directory that failing tests print.
//!
//! This crate is for tests only; it is the one place outside `broker` allowed to use `redis` directly.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Redis server tests use (`CELERIAC_TEST_REDIS`, default the local one).
pub fn redis_base() -> String {
    std::env::var("CELERIAC_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// Under `CI=true` a missing dependency is a failure; elsewhere the test prints why and returns early.
/// Returns true when the test should go on.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "CI=true and {what} is not available: this test must not be skipped (run scripts/test.sh, which sets it up)"
        );
    }
    eprintln!(
        "SKIP: {what} is not available (set up with scripts/ensure-services.sh and scripts/python-env.sh)"
    );
    false
}

/// A Redis database claimed for one test. Dropping it flushes the database and releases the lease.
pub struct RedisDb {
    pub db: u8,
    pub url: String,
    lease: String,
    token: String,
}

impl RedisDb {
    /// Claim a free database number, or `None` if Redis is unreachable (see [`require`]).
    pub fn claim() -> Option<RedisDb> {
        let base = redis_base();
        let client = redis::Client::open(format!("{base}/0")).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        let token = uuid::Uuid::new_v4().to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            for db in 1..=15u8 {
                let lease = format!("celeriac:testdb:{db}");
                let ok: Option<String> = redis::cmd("SET")
                    .arg(&lease)
                    .arg(&token)
                    .arg("NX")
                    .arg("EX")
                    .arg(900)
                    .query(&mut conn)
                    .ok()?;
                if ok.is_some() {
                    let url = format!("{base}/{db}");
                    let mut c = redis::Client::open(url.as_str())
                        .ok()?
                        .get_connection()
                        .ok()?;
                    let _: () = redis::cmd("FLUSHDB").query(&mut c).ok()?;
                    return Some(RedisDb {
                        db,
                        url,
                        lease,
                        token,
                    });
                }
            }
            assert!(
                Instant::now() < deadline,
                "no free Redis test database for 120 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A synchronous connection to this database (for assertions on raw keys).
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .expect("url")
            .get_connection()
            .expect("redis connection")
    }
}

impl Drop for RedisDb {
    fn drop(&mut self) {
        if let Ok(mut c) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) {
            let _: redis::RedisResult<()> = redis::cmd("FLUSHDB").query(&mut c);
        }
        if let Ok(mut c) =
            redis::Client::open(format!("{}/0", redis_base())).and_then(|c| c.get_connection())
        {
            let held: redis::RedisResult<Option<String>> =
                redis::cmd("GET").arg(&self.lease).query(&mut c);
            if held.ok().flatten().as_deref() == Some(self.token.as_str()) {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&self.lease).query(&mut c);
            }
        }
    }
}

/// Claim a Redis database or skip/fail per [`require`].
#[macro_export]
macro_rules! redis_db_or_skip {
    () => {
        match $crate::RedisDb::claim() {
            Some(db) => db,
            None => {
                $crate::require(
                    "Redis at CELERIAC_TEST_REDIS (default 127.0.0.1:6379)",
                    false,
                );
                return;
            }
        }
    };
}

/// The RabbitMQ server tests use, without a virtual host (`CELERIAC_TEST_AMQP`, default the local one as guest).
pub fn amqp_base() -> String {
    std::env::var("CELERIAC_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// A private RabbitMQ virtual host for one test, made with `rabbitmqctl add_vhost` and `set_permissions` (guest,
/// everything) and deleted with everything in it when dropped. Needs the broker's port to answer and `rabbitmqctl`
/// to work (as root, or as a user allowed to read the Erlang cookie).
pub struct AmqpVhost {
    pub vhost: String,
    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`
    pub url: String,
}

fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl AmqpVhost {
    /// Create a fresh virtual host, or `None` if RabbitMQ or `rabbitmqctl` is not available (see [`require`]).
    pub fn claim() -> Option<AmqpVhost> {
        let base = amqp_base();
        let hostport = base
            .rsplit('@')
            .next()
            .and_then(|h| h.split("://").last())
            .unwrap_or("127.0.0.1:5672")
            .to_string();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
            .ok()?
            .next()?;
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        let vhost = format!("celeriac_test_{}", uuid::Uuid::new_v4().simple());
        if !rabbitmqctl(&["add_vhost", &vhost]) {
            return None;
        }
        let made = AmqpVhost {
            url: format!("{base}/{vhost}"),
            vhost,
        };
        if !rabbitmqctl(&[
            "set_permissions",
            "-p",
            &made.vhost,
            "guest",
            ".*",
            ".*",
            ".*",
        ]) {
            return None;
        }
        Some(made)
    }
}

impl Drop for AmqpVhost {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.vhost]);
    }
}

/// Create a private RabbitMQ virtual host or skip/fail per [`require`].
#[macro_export]
macro_rules! amqp_vhost_or_skip {
    () => {
        match $crate::AmqpVhost::claim() {
            Some(v) => v,
            None => {
                $crate::require(
                    "RabbitMQ at CELERIAC_TEST_AMQP (default 127.0.0.1:5672) with rabbitmqctl",
                    false,
                );
                return;
            }
        }
    };
}

/// A RabbitMQ node of a test's own: the machine's `rabbitmq-server` on free ports, with its data, logs and
/// configuration in a temporary directory, so the test can stop it and start it again (a broker restart under a
/// running worker) without touching the shared broker. Its data survives a restart; it is stopped and removed when
/// dropped. Run as root, `rabbitmq-server` drops to the `rabbitmq` user, so the directory is handed to that user.
pub struct RabbitNode {
    /// The Erlang node name (`celeriac_t_<id>@localhost`).
    pub node: String,
    pub port: u16,
    /// `amqp://guest:guest@127.0.0.1:<port>//` (the default vhost `/`).
    pub url: String,
    dist_port: u16,
    dir: PathBuf,
    running: bool,
    /// With [`RabbitNode::start_tls`]: the TLS listener and the test CA's files.
    pub tls: Option<RabbitTls>,
}

/// A node's TLS listener (which requires a client certificate) and the PEM files of a CA made for the test, the
/// server's certificate for `localhost` and 127.0.0.1 signed by it, and a client certificate and key.
#[derive(Debug, Clone)]
pub struct RabbitTls {
    pub port: u16,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Make a CA, a server certificate for localhost/127.0.0.1 and a client certificate under `dir` with `openssl`.
fn make_test_certificates(dir: &Path) -> bool {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ext = |name: &str, text: &str| std::fs::write(dir.join(name), text).is_ok();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=celeriac test CA",
    ]) && ext(
        "server.ext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    ) && ext(
        "client.ext",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    ) && ["server", "client"].iter().all(|who| {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
            "-subj",
            &format!(
                "/CN={}",
                if *who == "server" {
                    "localhost"
                } else {
                    "guest"
                }
            ),
        ]) && run(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{who}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
        ])
    })
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

impl RabbitNode {
    /// Start a fresh node, or `None` if `rabbitmq-server` is missing or does not accept connections within 60 s.
    pub fn start() -> Option<RabbitNode> {
        RabbitNode::start_with(false)
    }

    /// [`RabbitNode::start`] with a TLS listener too ([`RabbitTls`]: certificates made with `openssl`; clients must
    /// present the client certificate).
    pub fn start_tls() -> Option<RabbitNode> {
        RabbitNode::start_with(true)
    }

    fn start_with(tls: bool) -> Option<RabbitNode> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("celeriac-rabbit-{}", &id[..12]));
        std::fs::create_dir_all(dir.join("mnesia")).ok()?;
        std::fs::create_dir_all(dir.join("log")).ok()?;
        let port = free_tcp_port();
        let mut node = RabbitNode {
            node: format!("celeriac_t_{}@localhost", &id[..12]),
            port,
            url: format!("amqp://guest:guest@127.0.0.1:{port}//"),
            dist_port: free_tcp_port(),
            dir,
            running: false,
            tls: None,
        };
        std::fs::write(node.dir.join("enabled_plugins"), "[].\n").ok()?;
        let mut conf = format!("listeners.tcp.local = 127.0.0.1:{port}\n");
        if tls {
            let certs = node.dir.join("tls");
            std::fs::create_dir_all(&certs).ok()?;
            if !make_test_certificates(&certs) {
                return None;
            }
            let tls_port = free_tcp_port();
            let f = |name: &str| certs.join(name).display().to_string();
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
                f("ca.pem"),
                f("server.pem"),
                f("server.key"),
            ));
            node.tls = Some(RabbitTls {
                port: tls_port,
                ca: certs.join("ca.pem"),
                client_cert: certs.join("client.pem"),
                client_key: certs.join("client.key"),
            });
        }
        std::fs::write(node.dir.join("rabbitmq.conf"), conf).ok()?;
        std::fs::write(node.dir.join("rabbitmq-env.conf"), "").ok()?;
        // As root the server runs as `rabbitmq`; elsewhere this fails harmlessly and the server runs as us.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&node.dir)
            .stderr(Stdio::null())
            .status();
        node.start_again().then_some(node)
    }

    /// Start the node (again, with the data it had); true once it accepts connections.
    pub fn start_again(&mut self) -> bool {
        let d = |sub: &str| self.dir.join(sub);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d("server.out"));
        let Ok(out) = out else { return false };
        let spawned = Command::new("rabbitmq-server")
            .current_dir(&self.dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", d("feature_flags"))
            .env("RABBITMQ_PID_FILE", d("pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().map(Stdio::from).unwrap_or(Stdio::null()))
            .stderr(Stdio::from(out))
            .spawn();
        if spawned.is_err() {
            return false;
        }
        let tls_port = self.tls.as_ref().map(|t| t.port);
        self.running = wait_until(Duration::from_secs(60), || {
            port_open(self.port) && tls_port.is_none_or(port_open)
        });
        self.running
    }

    /// Stop the node (`rabbitmqctl stop`, as an operator's restart does) and wait until its port is closed.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        wait_until(Duration::from_secs(30), || !port_open(self.port));
        self.running = false;
    }

    /// What the server wrote to its console (for failure messages).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default()
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start a private RabbitMQ node ([`RabbitNode`]) or skip/fail per [`require`].
#[macro_export]
macro_rules! rabbit_node_or_skip {
    () => {
        match $crate::RabbitNode::start() {
            Some(n) => n,
            None => {
                $crate::require(
                    "a private RabbitMQ node (rabbitmq-server and rabbitmqctl on PATH)",
                    false,
                );
                return;
            }
        }
    };
}

/// The target directory holding the workspace binaries (next to the running test executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    if deps.ends_with("deps") {
        deps.parent().expect("profile dir").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of a workspace binary; panics with a hint if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// `../shared` beside the repository (or `CELERIAC_SHARED`).
pub fn shared_dir() -> PathBuf {
    std::env::var("CELERIAC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("../shared"))
}

/// The Python venv's interpreter with Celery 5.7 and Flower 2.2, if present.
pub fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var("CELERIAC_PYTHON").ok().map(PathBuf::from),
        std::env::var("CELERIAC_VENV")
            .ok()
            .map(|v| PathBuf::from(v).join("bin/python")),
        std::env::var("HOME")
            .ok()
            .map(|h| PathBuf::from(h).join(".cache/celeriac/venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p| {
        p.exists()
            && Command::new(p)
                .args(["-c", "import celery, flower"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    })
}

/// The Python interpreter or skip/fail per [`require`].
#[macro_export]
macro_rules! python_or_skip {
    () => {
        match $crate::python() {
            Some(p) => p,
            None => {
                $crate::require(
                    "the Python venv with celery[redis]==5.7 and flower==2.2",
                    false,
                );
                return;
            }
        }
    };
}

/// A child process killed (SIGKILL) when dropped unless it already exited; its output goes to `log`.
pub struct Child {
    pub child: std::process::Child,
    pub log: PathBuf,
    pub name: String,
}

impl Child {
    /// Start `cmd` with stdout and stderr appended to a log file named after `name`.
    pub fn spawn(name: &str, cmd: &mut Command) -> Child {
        let dir = bin_dir().join("test-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Child {
            child,
            log,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (`TERM`, `KILL`, `QUIT`) with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Wait for exit up to `timeout`; returns the exit status if it exited.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log so far.
    pub fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Wait until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) {
        let ok = wait_until(timeout, || self.output().contains(needle));
        assert!(
            ok,
            "{} did not print {needle:?} within {timeout:?}; its log:\n{}",
            self.name,
            self.output()
        );
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- log of {} ({}) ----\n{}",
                self.name,
                self.log.display(),
                tail(&self.output(), 8000)
            );
        }
    }
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Poll `f` every 50 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Start `celeriac-worker` on `broker` with a node name and extra args; waits until it is ready.
pub fn rust_worker(broker: &str, node: &str, extra: &[&str]) -> Child {
    let mut cmd = Command::new(bin("celeriac-worker"));
    cmd.args(["-b", broker, "-n", node, "--loglevel", "info"])
        .args(extra)
        .env("NO_COLOR", "1");
    let child = Child::spawn(&format!("rust-worker-{node}"), &mut cmd);
    child.wait_for_output("celeriac-worker ready", Duration::from_secs(30));
    child
}

/// Start a Python Celery worker for `tests/python/pytasks.py`; waits until it is ready.
pub fn python_worker(python: &Path, broker: &str, node: &str, extra: &[&str]) -> Child {
    python_worker_with(python, broker, broker, node, extra)
}

/// [`python_worker`] with a result backend other than the broker.
pub fn python_worker_with(
    python: &Path,
    broker: &str,
    backend: &str,
    node: &str,
    extra: &[&str],
) -> Child {
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "celery",
        "-A",
        "pytasks",
        "worker",
        "-n",
        node,
        "-l",
        "info",
        "--without-heartbeat",
    ])
    .args(extra)
    .current_dir(repo_root().join("tests/python"))
    .env("CELERY_BROKER_URL", broker)
    .env("CELERY_RESULT_BACKEND", backend)
    .env("PYTHONUNBUFFERED", "1");
    let child = Child::spawn(&format!("python-worker-{node}"), &mut cmd);
    child.wait_for_output("ready.", Duration::from_secs(60));
    child
}

/// Run a Python snippet with the venv's interpreter (cwd `tests/python`, broker in `CELERY_BROKER_URL`);
/// returns stdout, panicking with stderr if it fails.
pub fn run_python(python: &Path, broker: &str, code: &str, timeout: Duration) -> String {
    run_python_with(python, broker, broker, code, timeout)
}

/// [`run_python`] with a result backend other than the broker (an AMQP broker with a Redis backend).
pub fn run_python_with(
    python: &Path,
    broker: &str,
    backend: &str,
    code: &str,
    timeout: Duration,
) -> String {
    let mut cmd = Command::new(python);
    cmd.args(["-c", code])
        .current_dir(repo_root().join("tests/python"))
        .env("CELERY_BROKER_URL", broker)
        .env("CELERY_RESULT_BACKEND", backend)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("python");
    let out = wait_output(child, timeout);
    assert!(
        out.status.success(),
        "python failed ({:?}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `wait_with_output` with a timeout (the child is killed after it).
pub fn wait_output(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut b);
        }
        b
    });
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// The JSON a Python snippet printed last (its last stdout line that starts with `{` or `[`).
pub fn py_json(out: &str) -> serde_json::Value {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{') || l.starts_with('['))
        .unwrap_or("null");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("python printed no JSON ({e}):\n{out}"))
}

/// The result meta Celery's Redis backend stored for task `id`, once it is ready (SUCCESS, FAILURE or REVOKED);
/// panics after `timeout`.
pub fn wait_meta(db: &RedisDb, id: &str, timeout: Duration) -> serde_json::Value {
    let mut conn = db.conn();
    let mut meta = serde_json::Value::Null;
    let ok = wait_until(timeout, || {
        let raw: Option<String> = redis::cmd("GET")
            .arg(format!("celery-task-meta-{id}"))
            .query(&mut conn)
            .unwrap();
        match raw.map(|r| serde_json::from_str::<serde_json::Value>(&r).unwrap()) {
            Some(v)
                if ["SUCCESS", "FAILURE", "REVOKED"]
                    .contains(&v["status"].as_str().unwrap_or("")) =>
            {
                meta = v;
                true
            }
            _ => false,
        }
    });
    assert!(ok, "task {id} did not finish within {timeout:?}");
    meta
}

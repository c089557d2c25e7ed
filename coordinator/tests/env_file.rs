//! The real `celeriac-coordinator` binary with `--env-file` and `CELERIAC_ENV_FILE` (the 600 rule, values reaching
//! clap's `env` defaults, the environment winning) and its `healthcheck` subcommand (the images' HEALTHCHECK).

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_celeriac-coordinator");

/// A directory of its own under the system's temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("celeriac-envfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn env_file(&self, text: &str, mode: u32) -> PathBuf {
        let p = self.0.join("celeriac.env");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn worker_config() -> PathBuf {
    testkit::repo_root().join("worker-config.yaml")
}

/// `celeriac-coordinator <args>` without the variables under test in its environment.
fn run(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("CELERIAC_CONFIG")
        .env_remove("CELERIAC_ENV_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("start celeriac-coordinator")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_file_others_can_read_is_refused_with_its_mode_and_the_fix() {
    let dir = Scratch::new("0644");
    let f = dir.env_file(
        &format!("CELERIAC_CONFIG={}\n", worker_config().display()),
        0o644,
    );
    let out = run(&["--env-file", f.to_str().unwrap(), "check-config"], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("mode 0644"), "{err}");
    assert!(err.contains(&format!("chmod 600 {}", f.display())), "{err}");
    assert!(
        !text(&out.stdout).contains(": ok"),
        "it must not have run the command"
    );
}

#[test]
fn a_600_file_gives_clap_its_value_by_flag_or_by_variable() {
    let dir = Scratch::new("0600");
    let config = worker_config();
    let f = dir.env_file(
        &format!(
            "# the repository's config\nexport CELERIAC_CONFIG=\"{}\"\n",
            config.display()
        ),
        0o600,
    );
    // Without the file the default ./worker-config.yaml is looked up relative to the working directory.
    let by_flag = Command::new(BIN)
        .args(["--env-file", f.to_str().unwrap(), "check-config"])
        .env_remove("CELERIAC_CONFIG")
        .env_remove("CELERIAC_ENV_FILE")
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(
        by_flag.status.success(),
        "stderr: {}",
        text(&by_flag.stderr)
    );
    assert!(
        text(&by_flag.stdout).starts_with(&format!("{}: ok", config.display())),
        "{}",
        text(&by_flag.stdout)
    );
    let by_var = Command::new(BIN)
        .args(["check-config"])
        .env_remove("CELERIAC_CONFIG")
        .env("CELERIAC_ENV_FILE", &f)
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(by_var.status.success(), "stderr: {}", text(&by_var.stderr));
    assert!(text(&by_var.stdout).starts_with(&format!("{}: ok", config.display())));
}

#[test]
fn a_variable_already_set_wins_over_the_file() {
    let dir = Scratch::new("env-wins");
    let f = dir.env_file(
        &format!("CELERIAC_CONFIG={}\n", worker_config().display()),
        0o600,
    );
    let elsewhere = dir.0.join("no-such-config.yaml");
    let out = run(
        &["--env-file", f.to_str().unwrap(), "check-config"],
        &[("CELERIAC_CONFIG", &elsewhere)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no-such-config.yaml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_bad_line_is_refused_with_its_line_number() {
    let dir = Scratch::new("bad-line");
    let f = dir.env_file("A=1\nthis is not a pair\n", 0o600);
    let out = run(&["--env-file", f.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("{}, line 2", f.display())),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn healthcheck_exits_0_on_a_2xx_and_1_otherwise() {
    for (answer, code) in [
        (&b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..], 0),
        (
            &b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"[..],
            1,
        ),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).unwrap() {
                    0 => break,
                    n => req.extend_from_slice(&buf[..n]),
                }
            }
            s.write_all(answer).unwrap();
            String::from_utf8(req).unwrap()
        });
        let out = run(&["healthcheck", "--port", &port.to_string()], &[]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(server.join().unwrap().starts_with("GET /healthz HTTP/1.0"));
    }
    // Nobody listening: the port was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(&["healthcheck", "--port", &port.to_string()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unhealthy"),
        "{}",
        text(&out.stderr)
    );
}

//! The OpenAI-compatible API as real clients use it, and proof that serving them makes no
//! outbound connection.
//!
//! `client_suites_pass_and_the_server_connects_only_to_loopback` starts `enclave serve` (the
//! built-in random test model and the real all-MiniLM-L6-v2 embedding model, one bearer key, at
//! most 2 requests in flight per key) under
//! `strace -f -e trace=connect`, then runs against it, in order:
//! - the official `openai` Python SDK and LangChain: `python3 -m pytest -q tests/clients/python`;
//! - the official `openai` Node SDK: `node --test tests/clients/node/<each *.test.mjs>`;
//! - schemathesis, fuzzing every operation of `/openapi.json`: `tests/clients/run_schemathesis.sh`.
//!
//! Each must pass. Then SIGTERM must stop the server with exit status 0, and every `connect(2)`
//! made by the server, any of its threads or any process it started must have gone to a loopback
//! address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) or to a Unix socket (allowed, and listed in
//! the test output). The log does not see datagrams sent to an address without a `connect`
//! (`sendto` on an unconnected UDP socket) or io_uring submissions.
//!
//! `connect_log_flags_an_outbound_connection` traces a process that does connect out, with the
//! same strace options and the same log parser, and checks that the connection is reported, so
//! an empty or unreadable log cannot make the first test pass.
//!
//! Needs python3 with `tests/clients/requirements.txt`, node with `tests/clients/node/node_modules`
//! and strace: `.ci/install-client-deps` installs them. The logs of the last run (server stderr,
//! connect log, each suite's output) stay in `target/tmp/api_clients/`.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

mod common;

/// The bearer key the client suites send.
const API_KEY: &str = "test-key-123";
/// `sha256:` and the lowercase hex SHA-256 of the key `test-key-123` (API_KEY above), the form
/// `enclave hash-api-key` prints.
const API_KEY_HASH: &str =
    "sha256:625faa3fbbc3d2bd9d6ee7678d04cc5339cb33dc68d9b58451853d60046e226a";
/// The built-in random test model, served when no --model is given.
const MODEL: &str = "enclave-test-model";
/// The real all-MiniLM-L6-v2, for the embeddings and vector-store suites.
const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

const MISSING_DEPS: &str = "client test dependencies are missing: run .ci/install-client-deps";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a failing tool's output goes into the assertion message (the whole of it is in
/// the log folder).
const OUTPUT_TAIL: usize = 30_000;

// ------------------------------------------------------------------------------------------
// The tests

#[test]
fn client_suites_pass_and_the_server_connects_only_to_loopback() {
    require_client_deps(true);
    let data = tempfile::tempdir().expect("create a temporary data dir");
    let logs = fresh_log_dir("api_clients");
    let mut server = TracedServer::start(data.path(), &logs);
    let root_url = format!("http://127.0.0.1:{}", server.port);
    println!(
        "server: {root_url} (enclave pid {}), logs in {}",
        server.pid,
        logs.display()
    );

    let env = [
        ("ENCLAVE_BASE_URL", format!("{root_url}/v1")),
        ("ENCLAVE_API_KEY", API_KEY.to_string()),
        ("ENCLAVE_MODEL", MODEL.to_string()),
        ("ENCLAVE_EMBEDDING_MODEL", EMBEDDING_MODEL.to_string()),
    ];
    let mut node_args = vec!["--test".to_string()];
    node_args.extend(node_test_files());
    let suites: [(&str, &str, Vec<String>, u64); 3] = [
        (
            "pytest",
            "python3",
            strings(&["-m", "pytest", "-q", "tests/clients/python"]),
            600,
        ),
        ("node", "node", node_args, 300),
        (
            "schemathesis",
            "bash",
            vec!["tests/clients/run_schemathesis.sh".into(), root_url.clone()],
            900,
        ),
    ];

    // Every suite runs even when an earlier one fails: one run reports every problem.
    let mut failures = Vec::new();
    for (name, program, args, timeout_s) in &suites {
        if let Err(e) = run_suite(
            name,
            program,
            args,
            &env,
            Duration::from_secs(*timeout_s),
            &logs,
        ) {
            failures.push(e);
        }
    }

    match server.terminate() {
        Ok(status) if status.success() => println!("server: exited 0 on SIGTERM"),
        Ok(status) => failures.push(format!(
            "the server did not exit cleanly on SIGTERM ({status}); its stderr ends:\n{}",
            tail(&read_lossy(&server.stderr_path), OUTPUT_TAIL)
        )),
        Err(e) => failures.push(format!(
            "stopping the server: {e}; its stderr ends:\n{}",
            tail(&read_lossy(&server.stderr_path), OUTPUT_TAIL)
        )),
    }

    let log = fs::read(&server.connect_log)
        .unwrap_or_else(|e| panic!("reading {}: {e}", server.connect_log.display()));
    let connects = classify_connects(&String::from_utf8_lossy(&log));
    println!(
        "server connect(2) calls: {} to loopback, {} to Unix sockets, {} elsewhere",
        connects.loopback.len(),
        connects.unix.len(),
        connects.outside.len()
    );
    for line in &connects.unix {
        println!("  AF_UNIX (allowed): {line}");
    }
    if !connects.outside.is_empty() {
        failures.push(format!(
            "the server connected outside loopback ({} calls; {}):\n{}",
            connects.outside.len(),
            server.connect_log.display(),
            connects.outside.join("\n")
        ));
    }

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A Python snippet that tries one outbound TCP connection (to an address nobody answers) and
/// gives up after 0.2 s, ignoring the error.
const OUTBOUND_SCRIPT: &str = concat!(
    "import socket\n",
    "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n",
    "s.settimeout(0.2)\n",
    "try:\n",
    "    s.connect(('10.255.255.1', 80))\n",
    "except OSError:\n",
    "    pass\n",
    "s.close()\n",
);

#[test]
fn connect_log_flags_an_outbound_connection() {
    require_client_deps(false);
    let dir = tempfile::tempdir().expect("create a temporary dir");
    let log = dir.path().join("connect.log");
    let out = strace_command(&log)
        .args(["python3", "-c", OUTBOUND_SCRIPT])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{MISSING_DEPS} (starting strace: {e})"));
    assert!(
        out.status.success(),
        "strace python3 failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&log).expect("read the connect log");
    let connects = classify_connects(&text);
    assert!(
        connects
            .outside
            .iter()
            .any(|l| l.contains("\"10.255.255.1\"")),
        "the connection to 10.255.255.1 was not reported; outside: {:?}; log:\n{text}",
        connects.outside
    );
}

#[test]
fn connect_log_parser_sorts_each_kind_of_address() {
    // Lines as strace 6 writes them (-f prefixes the pid).
    let log = r#"9216  connect(3, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("10.255.255.1")}, 16) = -1 EINPROGRESS (Operation now in progress)
9216  connect(3, {sa_family=AF_INET, sin_port=htons(9), sin_addr=inet_addr("127.0.0.1")}, 16) = -1 ECONNREFUSED (Connection refused)
9216  connect(3, {sa_family=AF_INET6, sin6_port=htons(9), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0
9216  connect(3, {sa_family=AF_INET6, sin6_port=htons(9), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6_addr), sin6_scope_id=0}, 28) = 0
9216  connect(3, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1 ENETUNREACH (Network is unreachable)
9216  connect(3, {sa_family=AF_UNIX, sun_path="/run/nscd/socket"}, 110) = -1 ENOENT (No such file or directory)
9217  connect(4, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("127.8.9.10")}, 16 <unfinished ...>
9217  <... connect resumed>) = 0
9216  connect(5, {sa_family=AF_UNSPEC, sa_data="\0\0\0\0\0\0\0\0\0\0\0\0\0\0"}, 16) = 0
9216  connect(6, 0x7ffd1c2e3a40, 16) = -1 EFAULT (Bad address)
9216  --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=9217, si_uid=0, si_status=0} ---
"#;
    fn has(lines: &[String], needle: &str) -> bool {
        lines.iter().any(|l| l.contains(needle))
    }
    let c = classify_connects(log);
    assert_eq!(c.loopback.len(), 4, "{c:#?}");
    for addr in [
        "\"127.0.0.1\"",
        "\"::1\"",
        "\"::ffff:127.0.0.1\"",
        "\"127.8.9.10\"",
    ] {
        assert!(has(&c.loopback, addr), "{addr} not loopback: {c:#?}");
    }
    assert_eq!(c.unix.len(), 1, "{c:#?}");
    assert_eq!(c.outside.len(), 4, "{c:#?}");
    for needle in [
        "\"10.255.255.1\"",
        "\"2001:db8::1\"",
        "AF_UNSPEC",
        "0x7ffd1c2e3a40",
    ] {
        assert!(has(&c.outside, needle), "{needle} not reported: {c:#?}");
    }
}

// ------------------------------------------------------------------------------------------
// The connect log

/// Every `connect(2)` of an strace log, sorted by where it went.
#[derive(Debug, Default)]
struct Connects {
    /// AF_INET or AF_INET6 to a loopback address.
    loopback: Vec<String>,
    /// AF_UNIX: local sockets, allowed.
    unix: Vec<String>,
    /// Anything else: another address, another family (AF_UNSPEC, AF_NETLINK, ...), or an
    /// address strace could not decode. Each one breaks the no-network promise.
    outside: Vec<String>,
}

/// Sorts the calls of a log written by `strace -e trace=connect` (see `strace_command`).
fn classify_connects(log: &str) -> Connects {
    let mut out = Connects::default();
    for line in log.lines() {
        // Under -f a call that another thread interrupts is split in two: the first half
        // (`connect(..., <unfinished ...>`) holds the address, `<... connect resumed>` does not.
        // Signal lines (`--- SIGCHLD ...`) are not calls.
        let Some(start) = line.find("connect(") else {
            continue;
        };
        let call = &line[start..];
        let family = after(call, "sa_family=").and_then(|rest| rest.split([',', '}']).next());
        let is_loopback = match family {
            Some("AF_INET") => quoted_after(call, "inet_addr(")
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                .is_some_and(|a| a.is_loopback()),
            Some("AF_INET6") => quoted_after(call, "inet_pton(AF_INET6, ")
                .and_then(|a| a.parse::<Ipv6Addr>().ok())
                .is_some_and(is_loopback_v6),
            _ => false,
        };
        let line = line.to_string();
        if family == Some("AF_UNIX") {
            out.unix.push(line);
        } else if is_loopback {
            out.loopback.push(line);
        } else {
            out.outside.push(line);
        }
    }
    out
}

/// `::1`, or an IPv4-mapped loopback address (`::ffff:127.x.y.z`).
fn is_loopback_v6(a: Ipv6Addr) -> bool {
    a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
}

/// The text right after the first `key` in `s`.
fn after<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    s.find(key).map(|i| &s[i + key.len()..])
}

/// The double-quoted string right after `key`: `inet_addr("127.0.0.1")` gives `127.0.0.1`.
fn quoted_after<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    after(s, key)?.strip_prefix('"')?.split('"').next()
}

/// strace as both tests run it: every thread and child process (-f), stops only at connect(2)
/// (a seccomp filter, so the server's other system calls run at full speed), no attach and exit
/// chatter (-qq), the calls written to `log`.
fn strace_command(log: &Path) -> Command {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "--seccomp-bpf", "-qq", "-e", "trace=connect", "-o"])
        .arg(log);
    cmd
}

// ------------------------------------------------------------------------------------------
// The server

/// `enclave serve` running under strace. Dropping it kills both, so a failed test leaves
/// nothing running.
struct TracedServer {
    strace: Child,
    /// The enclave process: strace's child. strace itself ignores SIGTERM while it traces.
    pid: u32,
    port: u16,
    stderr_path: PathBuf,
    connect_log: PathBuf,
}

impl TracedServer {
    fn start(data_dir: &Path, logs: &Path) -> TracedServer {
        let connect_log = logs.join("connect.log");
        let stderr_path = logs.join("server.stderr");
        let stderr = File::create(&stderr_path).expect("create the server's stderr log");
        let mut strace = strace_command(&connect_log)
            .arg(env!("CARGO_BIN_EXE_enclave"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--port", "0"])
            .args(["--api-key-hash", API_KEY_HASH])
            .args(["--max-concurrent-per-key", "2"])
            .args(["--model", MODEL])
            .arg("--embedding-model")
            .arg(format!(
                "{EMBEDDING_MODEL}={}",
                common::minilm_dir().display()
            ))
            // The default (a share of free memory) is committed at start; a test needs little.
            .args(["--kv-cache-memory", "64MiB"])
            // A developer's config file could add models or change limits.
            .env_remove("ENCLAVE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{MISSING_DEPS} (starting strace: {e})"));

        // Read stdout to its end on a thread, so the server never blocks on a full pipe.
        let stdout = strace.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut other_lines = Vec::new();
        let port = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let port = line
                        .strip_prefix("listening on http://127.0.0.1:")
                        .and_then(|p| p.trim().parse::<u16>().ok());
                    match port {
                        Some(port) => break port,
                        None => other_lines.push(line),
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    kill_traced(&mut strace);
                    panic!(
                        "no `listening on http://127.0.0.1:<port>` line on stdout within {} s; \
                         other stdout lines: {other_lines:?}; stderr:\n{}",
                        STARTUP_TIMEOUT.as_secs(),
                        tail(&read_lossy(&stderr_path), OUTPUT_TAIL)
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = strace.wait();
                    panic!(
                        "the server exited before listening ({status:?}); stdout: {other_lines:?}; \
                         stderr:\n{}",
                        tail(&read_lossy(&stderr_path), OUTPUT_TAIL)
                    );
                }
            }
        };

        let Some(pid) = tracee_pid(strace.id()) else {
            kill_traced(&mut strace);
            panic!(
                "no enclave process found under strace (pid {})",
                strace.id()
            );
        };
        TracedServer {
            strace,
            pid,
            port,
            stderr_path,
            connect_log,
        }
    }

    /// SIGTERM to the server, then its exit status (strace exits with its tracee's status).
    fn terminate(&mut self) -> Result<ExitStatus, String> {
        if !send_signal(self.pid, "TERM") {
            return Err(format!("`kill -s TERM {}` failed", self.pid));
        }
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            match self.strace.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                Ok(None) => {
                    return Err(format!(
                        "still running {} s after SIGTERM",
                        SHUTDOWN_TIMEOUT.as_secs()
                    ))
                }
                Err(e) => return Err(format!("waiting for the server: {e}")),
            }
        }
    }
}

impl Drop for TracedServer {
    fn drop(&mut self) {
        if let Ok(None) = self.strace.try_wait() {
            send_signal(self.pid, "KILL");
            kill_traced(&mut self.strace);
        }
    }
}

/// Kills strace's tracee, then strace, and reaps strace.
fn kill_traced(strace: &mut Child) {
    if let Some(pid) = tracee_pid(strace.id()) {
        send_signal(pid, "KILL");
    }
    let _ = strace.kill();
    let _ = strace.wait();
}

/// The process strace started: its child.
fn tracee_pid(strace_pid: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
        .unwrap_or_default();
    if let Some(pid) = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u32>().ok())
    {
        return Some(pid);
    }
    // Kernels without /proc/<pid>/task/<tid>/children: the process whose parent is strace.
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
        // `pid (comm) state ppid ...`, where comm may hold spaces and parentheses.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == strace_pid).then_some(pid)
    })
}

/// `kill -s <signal> <pid>` with the shell's builtin (procps' /usr/bin/kill is not on every
/// image); a negative pid names a process group.
fn send_signal(pid: impl std::fmt::Display, signal: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            r#"kill -s "$1" -- "$2""#,
            "sh",
            signal,
            &pid.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ------------------------------------------------------------------------------------------
// The client suites

/// Runs one suite from the repository root with the server's address in `env`; stdout and
/// stderr go, interleaved, to `<logs>/<name>.log`. Err carries the end of that output.
fn run_suite(
    name: &str,
    program: &str,
    args: &[String],
    env: &[(&str, String)],
    timeout: Duration,
    logs: &Path,
) -> Result<(), String> {
    let log_path = logs.join(format!("{name}.log"));
    let out = File::create(&log_path).expect("create a suite log");
    let err = out.try_clone().expect("clone a file handle");
    let shown = format!("{program} {}", args.join(" "));
    println!("{name}: {shown}");
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group, so that a timeout kills whatever it started too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{name}: cannot run `{shown}`: {e}\n{MISSING_DEPS}"))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < timeout => thread::sleep(Duration::from_millis(200)),
            Ok(None) => {
                send_signal(format!("-{}", child.id()), "KILL");
                let _ = child.wait();
                break None;
            }
            Err(e) => return Err(format!("{name}: waiting for `{shown}`: {e}")),
        }
    };
    let output = read_lossy(&log_path);
    let secs = started.elapsed().as_secs_f64();
    match status {
        Some(s) if s.success() => {
            println!("{name}: passed in {secs:.1} s");
            Ok(())
        }
        Some(s) => Err(format!(
            "{name} failed ({s}) after {secs:.1} s: `{shown}`; output ({}):\n{}",
            log_path.display(),
            tail(&output, OUTPUT_TAIL)
        )),
        None => Err(format!(
            "{name} timed out after {} s and was killed: `{shown}`; output ({}):\n{}",
            timeout.as_secs(),
            log_path.display(),
            tail(&output, OUTPUT_TAIL)
        )),
    }
}

/// The Node suite's files, named one by one: `node --test <folder>` runs the folder on Node 20
/// but takes it for a test file on Node 22, where arguments became glob patterns.
fn node_test_files() -> Vec<String> {
    let dir = repo_root().join("tests/clients/node");
    let mut files: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".test.mjs"))
        .map(|n| format!("tests/clients/node/{n}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test.mjs in {}", dir.display());
    files
}

/// Fails with one message naming the fix when a tool the suites need is not installed.
/// `all == false` checks only what the connect-log test needs (strace, python3).
fn require_client_deps(all: bool) {
    let root = repo_root();
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut missing = Vec::new();
    if !works("strace", &["-V"]) {
        missing.push("strace");
    }
    if !works("python3", &["--version"]) {
        missing.push("python3");
    }
    if all {
        let imports = "import openai, langchain_openai, schemathesis, pytest, pydantic, httpx";
        if !works("python3", &["-c", imports]) {
            missing.push("the Python packages of tests/clients/requirements.txt");
        }
        if !works("node", &["--version"]) {
            missing.push("node");
        }
        if !root
            .join("tests/clients/node/node_modules/openai/package.json")
            .is_file()
        {
            missing.push("tests/clients/node/node_modules");
        }
    }
    assert!(
        missing.is_empty(),
        "{MISSING_DEPS} (not found: {})",
        missing.join(", ")
    );
}

// ------------------------------------------------------------------------------------------
// Small helpers

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An empty folder under target/tmp for this run's logs, kept after the test for reading.
fn fresh_log_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

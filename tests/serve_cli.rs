//! `enclave serve` as an operator runs it: SIGTERM lets an in-flight stream finish and exits 0;
//! JSON logs carry one line per request without the prompt; bad configuration fails at once
//! with one line naming the problem.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const SECRET_PROMPT: &str = "patient Jane Roe, date of birth 1970-01-01";

struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn serve(extra: &[&str]) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--port", "0", "--kv-cache-memory", "16MiB"])
        .args(extra)
        .env_remove("ENCLAVE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no `listening on` line: {line:?}"))?;
    let server = Server {
        child,
        port,
        _dir: dir,
    };
    if extra.contains(&"--tls-cert") {
        return Ok(server);
    }
    let start = Instant::now();
    while get(server.port, "/ready").map(|(s, _)| s).unwrap_or(0) != 200 {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the server never became ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    c.read_to_string(&mut text)?;
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, text))
}

fn start_stream(port: u16, max_tokens: u32) -> Result<TcpStream> {
    let body = serde_json::json!({
        "model": "enclave-test-model",
        "messages": [{"role": "user", "content": SECRET_PROMPT}],
        "max_tokens": max_tokens, "ignore_eos": true, "stream": true,
    })
    .to_string();
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    write!(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
    Ok(c)
}

fn wait_exit(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            bail!("the server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_finishes_the_stream_in_flight_then_exits_zero() -> Result<()> {
    let mut s = serve(&[])?;
    // 3500 chunks of ~250 bytes outgrow the socket buffers, so the server is still writing
    // this stream (waiting for us to read) when the signal arrives.
    let mut stream = start_stream(s.port, 3500)?;
    let mut first = [0u8; 12];
    stream.read_exact(&mut first)?;
    assert_eq!(&first, b"HTTP/1.1 200");
    let status = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()?;
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(200));
    let (ready, _) = get(s.port, "/ready").unwrap_or((0, String::new()));
    assert_ne!(ready, 200, "a draining server must not report ready");
    let mut rest = String::new();
    stream.read_to_string(&mut rest)?;
    assert!(
        rest.matches("data: ").count() > 1000,
        "the stream ended before the signal"
    );
    assert!(
        rest.contains("data: [DONE]"),
        "the stream was cut: ...{}",
        &rest[rest.len().saturating_sub(300)..]
    );
    assert_eq!(
        rest.matches("\"finish_reason\":\"length\"").count(),
        1,
        "the stream must run to its max_tokens"
    );
    let exit = wait_exit(&mut s.child, Duration::from_secs(20))?;
    assert!(exit.success(), "{exit:?}");
    Ok(())
}

#[test]
fn json_logs_have_one_line_per_request_and_never_the_prompt() -> Result<()> {
    let mut s = serve(&["--log-format", "json"])?;
    let mut stream = start_stream(s.port, 5)?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    assert!(body.contains("[DONE]"));
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()?;
    wait_exit(&mut s.child, Duration::from_secs(20))?;
    let mut logs = String::new();
    s.child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut logs)?;
    assert!(
        !logs.contains("Jane Roe"),
        "the prompt leaked into the logs"
    );
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("every log line is JSON")?;
    let requests: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "enclave::request" && l["route"] == "/v1/chat/completions")
        .collect();
    assert_eq!(requests.len(), 1, "{logs}");
    let r = requests[0];
    assert_eq!(r["status"], 200);
    assert_eq!(r["model"], "enclave-test-model");
    assert_eq!(r["completion_tokens"], 5);
    assert!(r["prompt_tokens"].as_u64() > Some(0));
    assert!(r["request_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("req-")));
    assert!(r["latency_ms"].as_f64().is_some());
    Ok(())
}

fn fails_with_one_line(args: &[&str], env: &[(&str, &str)], needle: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("ENCLAVE_CONFIG")
        .stdin(Stdio::null())
        .output()?;
    assert!(!out.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(needle), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

#[test]
fn bad_configuration_fails_at_once_with_one_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad_toml = dir.path().join("enclave.toml");
    std::fs::write(&bad_toml, "prot = 8080\n")?;
    let bad = bad_toml.to_string_lossy().to_string();
    fails_with_one_line(&["serve", "--config", &bad], &[], "prot")?;
    fails_with_one_line(
        &["serve", "--config", "/nonexistent/enclave.toml"],
        &[],
        "cannot read the config file",
    )?;
    fails_with_one_line(&["serve", "--api-key-hash", "plaintext"], &[], "sha256:")?;
    fails_with_one_line(&["serve", "--kv-cache-dtype", "f8"], &[], "f8")?;
    fails_with_one_line(&["serve"], &[("ENCLAVE_PORT", "eighty")], "ENCLAVE_PORT")?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    fails_with_one_line(&["serve", "--port", &port], &[], "cannot listen")?;
    Ok(())
}

#[test]
fn hash_api_key_prints_the_form_serve_accepts() -> Result<()> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .arg("hash-api-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(b"test-key-123\n")?;
    let out = child.wait_with_output()?;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout)?.trim(),
        "sha256:625faa3fbbc3d2bd9d6ee7678d04cc5339cb33dc68d9b58451853d60046e226a"
    );
    Ok(())
}

#[test]
fn tls_serves_https_with_the_given_certificate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, issued.cert.pem())?;
    std::fs::write(&key, issued.signing_key.serialize_pem())?;
    let (cert_s, key_s) = (cert.to_string_lossy(), key.to_string_lossy());
    let mut s = serve(&["--tls-cert", &cert_s, "--tls-key", &key_s])?;
    // An independent TLS client that trusts only this certificate.
    let fetch = r#"
import ssl, sys, time, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
for _ in range(600):
    try:
        print(urllib.request.urlopen(sys.argv[2], context=ctx).read().decode())
        break
    except urllib.error.HTTPError:
        time.sleep(0.1)
"#;
    let url = format!("https://localhost:{}/ready", s.port);
    let out = Command::new("python3")
        .args(["-c", fetch, &cert_s, &url])
        .output()
        .context("python3 runs the TLS client")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ready\""));
    let (plain, _) = get(s.port, "/health").unwrap_or((0, String::new()));
    assert_ne!(plain, 200, "plain HTTP must not be served beside HTTPS");
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()?;
    assert!(wait_exit(&mut s.child, Duration::from_secs(20))?.success());
    fails_with_one_line(&["serve", "--tls-cert", &cert_s], &[], "--tls-key")?;
    fails_with_one_line(
        &["serve", "--tls-cert", &key_s, "--tls-key", &key_s],
        &[],
        "certificate",
    )?;
    Ok(())
}

#[test]
fn several_models_are_served_and_routed_by_name() -> Result<()> {
    let models = tempfile::tempdir()?;
    for (name, seed) in [("alpha", "1"), ("beta", "2")] {
        let dir = models.path().join(name);
        let status = Command::new(env!("CARGO_BIN_EXE_enclave"))
            .arg("write-test-model")
            .arg(&dir)
            .args(["--seed", seed])
            .stderr(Stdio::null())
            .status()?;
        assert!(status.success());
    }
    let (a, b) = (
        models.path().join("alpha").to_string_lossy().to_string(),
        models.path().join("beta").to_string_lossy().to_string(),
    );
    let named_b = format!("support={b}");
    let mut s = serve(&["--model", &a, "--model", &named_b])?;
    let (_, list) = get(s.port, "/v1/models")?;
    assert!(
        list.contains("\"id\":\"alpha\"") && list.contains("\"id\":\"support\""),
        "{list}"
    );
    let mut texts = Vec::new();
    for model in ["alpha", "support"] {
        let body = serde_json::json!({"model": model, "prompt": "same prompt", "max_tokens": 8,
                                      "temperature": 0, "ignore_eos": true})
        .to_string();
        let mut c = TcpStream::connect(("127.0.0.1", s.port))?;
        write!(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
        let mut text = String::new();
        c.read_to_string(&mut text)?;
        let json = text.split("\r\n\r\n").nth(1).context("a body")?;
        let v: serde_json::Value = serde_json::from_str(json)?;
        assert_eq!(v["model"], model, "{text}");
        texts.push(
            v["choices"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    // Different random weights answer the same greedy prompt differently.
    assert_ne!(texts[0], texts[1]);
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()?;
    assert!(wait_exit(&mut s.child, Duration::from_secs(20))?.success());
    Ok(())
}

//! `enclave kb` as a user runs it, and what a `kill -9` in the middle of a large ingest leaves
//! behind: every document whole or absent, and an index rebuilt from SQLite on restart.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::minilm_dir;

fn enclave(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enclave"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

#[test]
fn create_add_list_search_remove_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("returns.md"),
        "# Returns\n\nItems can be returned within 30 days.",
    )
    .unwrap();
    std::fs::write(
        docs.join("hours.txt"),
        "Our phone line is open from 9am to 5pm on weekdays.",
    )
    .unwrap();
    let model = minilm_dir();
    let model = format!("minilm={}", model.display());
    let out = ok(&enclave(
        &data,
        &["kb", "create", "help", "--embedding-model", &model],
    ));
    assert!(out.contains("384 dimensions"), "{out}");
    let out = ok(&enclave(
        &data,
        &["kb", "add", "help", docs.to_str().unwrap()],
    ));
    assert!(out.contains("2 added"), "{out}");
    let out = ok(&enclave(&data, &["kb", "list"]));
    assert!(out.contains("help") && out.contains("2 docs"), "{out}");
    // No --embedding-model: the folder recorded at create time is used.
    let out = ok(&enclave(
        &data,
        &[
            "kb",
            "search",
            "help",
            "when can I call you",
            "-k",
            "1",
            "--json",
        ],
    ));
    let hits: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        hits[0]["source"].as_str().unwrap().ends_with("hours.txt"),
        "{out}"
    );
    let reranker =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rerankers/tiny-bert-reranker");
    let out = ok(&enclave(
        &data,
        &[
            "kb",
            "search",
            "help",
            "when can I call you",
            "--json",
            "--reranker",
            reranker.to_str().unwrap(),
        ],
    ));
    let hits: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hits.as_array().unwrap().len(), 2, "{out}");
    assert!(hits[0]["rerank_score"].is_number(), "{out}");
    let (score, rerank) = (
        hits[0]["score"].as_f64().unwrap(),
        hits[0]["rerank_score"].as_f64().unwrap(),
    );
    assert!((score - rerank).abs() < 1e-6, "{out}");
    let out = enclave(&data, &["kb", "search", "nope", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("collection `nope` does not exist"), "{err}");
    let out = ok(&enclave(&data, &["kb", "remove", "help"]));
    assert!(out.contains("deleted collection `help`"), "{out}");
}

#[test]
fn kill_9_during_a_large_ingest_leaves_whole_documents_and_a_rebuilt_index() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    const N: i64 = 1000;
    for i in 0..N {
        std::fs::write(
            docs.join(format!("article-{i:04}.md")),
            format!(
                "# Article {i}\n\n## Part one\n\nCustomer {i} reported a billing problem with order {i}.\n\n\
                 ## Part two\n\nThe agent refunded order {i} and closed the ticket."
            ),
        )
        .unwrap();
    }
    let model = format!("minilm={}", minilm_dir().display());
    ok(&enclave(
        &data,
        &["kb", "create", "big", "--embedding-model", &model],
    ));
    let db = data.join("knowledge/kb.sqlite3");
    let mut child = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .arg("--data-dir")
        .arg(&data)
        .args(["kb", "add", "big", docs.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while count(&db, "SELECT COUNT(*) FROM documents") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no document was committed"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the ingest ended early"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SIGKILL: no destructor, no flush, no index save.
    child.kill().unwrap();
    child.wait().unwrap();

    let committed = count(&db, "SELECT COUNT(*) FROM documents");
    assert!(
        committed > 0 && committed < N,
        "the kill must land mid-ingest: {committed} of {N} documents committed"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // Whole documents: each committed document has all of its chunks (two sections each).
    let partial: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM documents d WHERE (SELECT COUNT(*) FROM chunks k \
             WHERE k.document_id = d.id) != 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(partial, 0, "a document was half-written");
    drop(conn);

    // Restart: the stale index is detected and rebuilt (with a log line), and every committed
    // document is searchable by vector.
    let out = enclave(&data, &["kb", "rebuild", "big"]);
    let stdout = ok(&out);
    assert!(
        stdout.contains(&format!("{} vectors", committed * 2)),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rebuilding the vector index"), "{stderr}");

    // Finishing the ingest re-embeds only what was not committed.
    let out = ok(&enclave(
        &data,
        &["kb", "add", "big", docs.to_str().unwrap()],
    ));
    assert!(
        out.contains(&format!("{} added", N - committed))
            && out.contains(&format!("{committed} unchanged")),
        "{out}"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM documents"), N);
}

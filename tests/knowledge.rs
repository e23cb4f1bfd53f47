//! The knowledge base end to end, with the real all-MiniLM-L6-v2: ingestion of every format,
//! change detection, hybrid search with filters and citations, one model per collection, index
//! rebuilds, bad files, concurrent search during ingest, and a `kill -9` in mid-ingest.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use enclave::embedding::EmbeddingModel;
use enclave::knowledge::{
    CollectionParams, Embedder, IngestOptions, KnowledgeBase, KnowledgeError, OpenMode, Rerank,
    SearchFilter, SearchMode, SearchRequest,
};

mod common;
use common::minilm_dir;

fn minilm() -> Arc<EmbeddingModel> {
    static MODEL: OnceLock<Arc<EmbeddingModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Arc::new(EmbeddingModel::load(&minilm_dir(), Some("minilm".into())).unwrap())
        })
        .clone()
}

fn open(dir: &Path) -> KnowledgeBase {
    KnowledgeBase::open(
        dir,
        vec![minilm() as Arc<dyn Embedder>],
        OpenMode::ReadWrite,
    )
    .unwrap()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, body).unwrap();
    p
}

fn docs_folder(root: &Path) -> PathBuf {
    let docs = root.join("docs");
    write(
        &docs,
        "refunds.md",
        "---\ntags: [billing, policy]\nlanguage: en\n---\n# Refund policy\n\n## Eligibility\n\n\
         Orders can be returned for a full refund within 30 days of delivery, provided the item \
         is unused and in its original packaging.\n\n## How refunds are paid\n\nThe money goes \
         back to the original payment method within five business days.\n",
    );
    write(
        &docs,
        "help/password.html",
        "<html lang=\"en\"><head><title>Resetting your password</title></head><body>\
         <nav>Home | Products | Contact us</nav><main><h1>Resetting your password</h1>\
         <p>Click \"Forgot password\" on the sign-in page and follow the link we email you. \
         The link expires after one hour.</p></main><footer>Copyright Acme</footer>\
         <script>trackVisitor()</script></body></html>",
    );
    write(
        &docs,
        "shipping.txt",
        "Standard shipping takes three to five working days. Express delivery arrives the next \
         day when ordered before noon.",
    );
    write(
        &docs,
        "tickets.csv",
        "conversation_id,role,text,csat,intent\n\
         t1,customer,My parcel never arrived and tracking has not moved for a week,4,missing_parcel\n\
         t1,agent,I am sorry; I have opened a trace with the carrier and will send a replacement,4,missing_parcel\n\
         t2,customer,How do I change the email address on my account?,5,change_email\n\
         t2,agent,Go to Settings then Profile and edit the email field,5,change_email\n",
    );
    write(
        &docs,
        "faq.csv",
        "question,answer\nDo you ship to Canada?,Yes. We ship to Canada and the United States.\n",
    );
    docs
}

fn hybrid(collection: &str, query: &str, k: usize) -> SearchRequest {
    SearchRequest {
        collections: vec![collection.into()],
        query: query.into(),
        top_k: k,
        filter: SearchFilter::default(),
        mode: SearchMode::Hybrid,
    }
}

fn create(kb: &KnowledgeBase, name: &str) {
    kb.create_collection(name, "minilm", None, CollectionParams::default())
        .unwrap();
}

#[test]
fn a_folder_of_every_kind_is_ingested_and_found_with_citations() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = docs_folder(tmp.path());
    let kb = open(&tmp.path().join("kb"));
    create(&kb, "support");
    let r = kb
        .ingest_path("support", &docs, &IngestOptions::default(), &mut |_| {})
        .unwrap();
    assert_eq!(r.files, 5, "{r:?}");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // refunds, password, shipping, two tickets, one FAQ pair.
    assert_eq!(r.documents_added, 6, "{r:?}");

    let hits = kb
        .search(&hybrid(
            "support",
            "I forgot my login, how do I get back in?",
            3,
        ))
        .unwrap();
    let top = &hits[0].chunk;
    assert_eq!(top.title, "Resetting your password");
    assert!(top.source.ends_with("help/password.html"));
    assert!(!top.text.contains("trackVisitor") && !top.text.contains("Products"));
    let content = kb.store().document_content(top.document_id).unwrap();
    let span: String = content
        .chars()
        .skip(top.char_start)
        .take(top.char_end - top.char_start)
        .collect();
    assert_eq!(
        span, top.text,
        "the citation span points at the chunk's text"
    );

    let hits = kb
        .search(&hybrid(
            "support",
            "can I still return an unused item that arrived three weeks ago?",
            3,
        ))
        .unwrap();
    assert_eq!(hits[0].chunk.title, "Refund policy");
    assert_eq!(hits[0].chunk.heading_path, "Refund policy > Eligibility");
    assert!(hits[0].bm25_rank.is_some() || hits[0].vector_rank.is_some());

    let hits = kb
        .search(&hybrid("support", "package lost, tracking stuck", 1))
        .unwrap();
    assert_eq!(hits[0].chunk.source_type, "ticket");
    assert_eq!(hits[0].chunk.metadata["intent"], "missing_parcel");
}

#[test]
fn filters_restrict_both_bm25_and_vector_results() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = docs_folder(tmp.path());
    let kb = open(&tmp.path().join("kb"));
    create(&kb, "support");
    kb.ingest_path("support", &docs, &IngestOptions::default(), &mut |_| {})
        .unwrap();
    for mode in [SearchMode::Hybrid, SearchMode::Bm25, SearchMode::Vector] {
        let mut req = hybrid("support", "refund money back shipping password", 10);
        req.mode = mode;
        req.filter.tags = vec!["billing".into()];
        let hits = kb.search(&req).unwrap();
        assert!(!hits.is_empty(), "{mode:?}");
        assert!(
            hits.iter().all(|h| h.chunk.title == "Refund policy"),
            "{mode:?}"
        );
        req.filter = SearchFilter {
            source_types: vec!["faq".into(), "text".into()],
            ..Default::default()
        };
        let hits = kb.search(&req).unwrap();
        assert!(!hits.is_empty(), "{mode:?}");
        assert!(
            hits.iter()
                .all(|h| ["faq", "text"].contains(&h.chunk.source_type.as_str())),
            "{mode:?}"
        );
        req.filter = SearchFilter {
            languages: vec!["en".into()],
            ..Default::default()
        };
        let hits = kb.search(&req).unwrap();
        assert!(hits
            .iter()
            .all(|h| h.chunk.language.as_deref() == Some("en")));
    }
}

/// The "support" collection in `root/kb`, filled from `docs_folder(root)`.
fn ingested_support(root: &Path) -> (KnowledgeBase, PathBuf) {
    let docs = docs_folder(root);
    let kb = open(&root.join("kb"));
    create(&kb, "support");
    kb.ingest_path("support", &docs, &IngestOptions::default(), &mut |_| {})
        .unwrap();
    (kb, docs)
}

/// The stored shipping.txt of the "support" collection.
fn shipping_doc(kb: &KnowledgeBase) -> enclave::knowledge::DocumentRecord {
    let c = kb.store().collection("support").unwrap();
    kb.store()
        .documents(&c, 100, 0)
        .unwrap()
        .into_iter()
        .find(|d| d.source.ends_with("shipping.txt"))
        .unwrap()
}

/// One changed file and one deleted file.
fn edit_shipping_and_drop_faq(docs: &Path) {
    write(
        docs,
        "shipping.txt",
        "Shipping is free on orders over fifty euros.",
    );
    std::fs::remove_file(docs.join("faq.csv")).unwrap();
}

#[test]
fn reingesting_re_embeds_only_changes_and_drops_deleted_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (kb, docs) = ingested_support(tmp.path());
    let opts = IngestOptions::default();

    let again = kb
        .ingest_path("support", &docs, &opts, &mut |_| {})
        .unwrap();
    assert_eq!(again.documents_unchanged, 6, "{again:?}");
    assert_eq!(again.chunks_written, 0, "{again:?}");

    edit_shipping_and_drop_faq(&docs);
    let changed = kb
        .ingest_path("support", &docs, &opts, &mut |_| {})
        .unwrap();
    assert_eq!(
        (
            changed.documents_updated,
            changed.documents_removed,
            changed.documents_unchanged
        ),
        (1, 1, 4),
        "{changed:?}"
    );
    let c = kb.store().collection("support").unwrap();
    assert_eq!(c.num_documents, 5);
    let hits = kb
        .search(&hybrid("support", "Do you ship to Canada?", 10))
        .unwrap();
    assert!(
        hits.iter().all(|h| h.chunk.source_type != "faq"),
        "the deleted FAQ is gone"
    );
    assert_eq!(shipping_doc(&kb).version, 2);
    // The index holds exactly the store's chunks after the changes.
    drop(kb);
    let kb = open(&tmp.path().join("kb"));
    let c = kb.store().collection("support").unwrap();
    let vector = SearchRequest {
        mode: SearchMode::Vector,
        ..hybrid("support", "free shipping threshold", 100)
    };
    assert_eq!(kb.search(&vector).unwrap().len(), c.num_chunks);
}

fn bm25(collection: &str, query: &str) -> SearchRequest {
    SearchRequest {
        mode: SearchMode::Bm25,
        ..hybrid(collection, query, 10)
    }
}

#[test]
fn keyword_search_follows_every_change_and_is_rebuilt_the_same_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (kb, docs) = ingested_support(tmp.path());
    let opts = IngestOptions::default();
    let sources = |kb: &KnowledgeBase, q: &str| -> Vec<String> {
        kb.search(&bm25("support", q))
            .unwrap()
            .into_iter()
            .map(|h| h.chunk.source)
            .collect()
    };
    let canada = sources(&kb, "canada");
    assert!(
        !canada.is_empty() && canada.iter().all(|s| s.ends_with("faq.csv")),
        "{canada:?}"
    );
    // Stemmed and case-folded: "Refunds" meets "refund".
    assert!(sources(&kb, "Refunds")[0].ends_with("refunds.md"));

    edit_shipping_and_drop_faq(&docs);
    kb.ingest_path("support", &docs, &opts, &mut |_| {})
        .unwrap();
    assert!(
        sources(&kb, "canada").is_empty(),
        "the deleted file's words are gone"
    );
    assert!(
        sources(&kb, "noon").is_empty(),
        "the replaced text's words are gone"
    );
    let euros = sources(&kb, "euros");
    assert_eq!(euros.len(), 1);
    assert!(euros[0].ends_with("shipping.txt"));

    let before = kb
        .search(&bm25("support", "refund password email"))
        .unwrap();
    assert!(before.len() >= 3);
    drop(kb);
    let kb = open(&tmp.path().join("kb"));
    let after = kb
        .search(&bm25("support", "refund password email"))
        .unwrap();
    let ranked = |hits: &[enclave::knowledge::SearchHit]| -> Vec<(i64, u64)> {
        hits.iter()
            .map(|h| (h.chunk.chunk_id, h.score.to_bits()))
            .collect()
    };
    assert_eq!(
        ranked(&after),
        ranked(&before),
        "rebuilt from the store alike"
    );

    let shipping = shipping_doc(&kb);
    assert_eq!(kb.remove_documents("support", &[shipping.id]).unwrap(), 1);
    assert!(sources(&kb, "euros").is_empty());
    let c = kb.store().collection("support").unwrap();
    assert_eq!(c.num_documents, 4, "counts follow the removal");
}

#[test]
fn a_collection_is_never_searched_or_filled_with_another_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kb");
    {
        let kb = open(&dir);
        create(&kb, "support");
    }
    let other = Arc::new(
        EmbeddingModel::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embeddings/tiny-bert-cls"),
            Some("minilm".into()),
        )
        .unwrap(),
    );
    let kb =
        KnowledgeBase::open(&dir, vec![other as Arc<dyn Embedder>], OpenMode::ReadWrite).unwrap();
    let err = kb.search(&hybrid("support", "x", 1)).unwrap_err();
    assert!(
        matches!(
            err,
            KnowledgeError::DimensionMismatch {
                expected: 384,
                actual: 32,
                ..
            }
        ),
        "{err}"
    );
    drop(kb);
    let kb = KnowledgeBase::open(&dir, Vec::new(), OpenMode::ReadWrite).unwrap();
    let err = kb
        .ingest_path(
            "support",
            tmp.path(),
            &IngestOptions::default(),
            &mut |_| {},
        )
        .unwrap_err();
    assert!(
        matches!(err, KnowledgeError::EmbedderMissing { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--embedding-model"), "{err}");
}

#[test]
fn a_missing_or_corrupt_index_is_rebuilt_from_sqlite_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = docs_folder(tmp.path());
    let dir = tmp.path().join("kb");
    let before = {
        let kb = open(&dir);
        create(&kb, "support");
        kb.ingest_path("support", &docs, &IngestOptions::default(), &mut |_| {})
            .unwrap();
        kb.search(&hybrid("support", "parcel never arrived", 5))
            .unwrap()
    };
    let index = dir.join("indexes").join("1.usearch");
    assert!(index.is_file());
    for damage in ["corrupt", "missing"] {
        if damage == "corrupt" {
            std::fs::write(&index, b"not an index").unwrap();
        } else {
            std::fs::remove_file(&index).unwrap();
        }
        let kb = open(&dir);
        let after = kb
            .search(&hybrid("support", "parcel never arrived", 5))
            .unwrap();
        let ids = |h: &[enclave::knowledge::SearchHit]| {
            h.iter().map(|h| h.chunk.chunk_id).collect::<Vec<_>>()
        };
        assert_eq!(ids(&after), ids(&before), "after a {damage} index");
        assert!(index.is_file(), "the rebuilt index was saved");
    }
}

#[test]
fn bad_files_are_reported_one_by_one_and_the_rest_is_ingested() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = docs_folder(tmp.path());
    std::fs::write(
        docs.join("broken.txt"),
        b"valid start \xff\xfe then invalid",
    )
    .unwrap();
    std::fs::write(docs.join("scan.pdf"), b"%PDF-1.4 garbage that is no PDF").unwrap();
    let big = std::fs::File::create(docs.join("huge.md")).unwrap();
    big.set_len(2 * 1024 * 1024 * 1024).unwrap();
    let kb = open(&tmp.path().join("kb"));
    create(&kb, "support");
    let r = kb
        .ingest_path("support", &docs, &IngestOptions::default(), &mut |_| {})
        .unwrap();
    assert_eq!(r.documents_added, 6, "{r:?}");
    let failed: Vec<&str> = r.errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(failed.len(), 3, "{:?}", r.errors);
    for name in ["broken.txt", "scan.pdf", "huge.md"] {
        assert!(
            failed.iter().any(|p| p.ends_with(name)),
            "{name}: {:?}",
            r.errors
        );
    }
}

#[test]
fn searches_keep_working_while_an_ingest_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("many");
    for i in 0..300 {
        write(
            &docs,
            &format!("note-{i:03}.md"),
            &format!(
                "# Note {i}\n\nCustomer {i} asked about invoice number {i} and a late delivery."
            ),
        );
    }
    let kb = Arc::new(open(&tmp.path().join("kb")));
    create(&kb, "notes");
    write(
        &tmp.path().join("seed"),
        "seed.md",
        "# Seed\n\nInvoices are sent by email.",
    );
    kb.ingest_path(
        "notes",
        &tmp.path().join("seed"),
        &IngestOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let writer = {
        let kb = kb.clone();
        std::thread::spawn(move || {
            kb.ingest_path("notes", &docs, &IngestOptions::default(), &mut |_| {})
                .unwrap()
        })
    };
    let mut searches = 0;
    while !writer.is_finished() {
        let hits = kb
            .search(&hybrid("notes", "where is my invoice", 3))
            .unwrap();
        assert!(!hits.is_empty());
        searches += 1;
    }
    let report = writer.join().unwrap();
    assert_eq!(report.documents_added, 300);
    assert!(searches > 1, "searches ran during the ingest ({searches})");
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let _first = open(tmp.path());
    let err = KnowledgeBase::open(tmp.path(), Vec::new(), OpenMode::ReadWrite)
        .err()
        .unwrap();
    assert!(matches!(err, KnowledgeError::Locked { .. }), "{err}");
    KnowledgeBase::open(tmp.path(), Vec::new(), OpenMode::ReadOnly).unwrap();
}

/// Scores a passage by whether it mentions one word: a stand-in cross-encoder whose preferred
/// order is known in advance.
struct PrefersWord(&'static str);

impl Rerank for PrefersWord {
    fn model_id(&self) -> &str {
        "prefers-word"
    }
    fn rerank(&self, _query: &str, passages: &[String]) -> Result<Vec<f32>, String> {
        Ok(passages
            .iter()
            .map(|p| if p.contains(self.0) { 10.0 } else { 0.0 })
            .collect())
    }
}

#[test]
fn a_reranker_reorders_the_fused_hits() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = docs_folder(tmp.path());
    let kb = open(&tmp.path().join("kb"));
    create(&kb, "support");
    kb.ingest_path("support", &docs, &IngestOptions::default(), &mut |_| {})
        .unwrap();
    let query = hybrid("support", "I forgot my password and cannot sign in", 3);
    let plain = kb.search(&query).unwrap();
    assert_eq!(plain[0].chunk.title, "Resetting your password");
    assert!(plain.iter().all(|h| h.rerank_score.is_none()));
    kb.set_reranker(Arc::new(PrefersWord("Canada")));
    let reranked = kb.search(&query).unwrap();
    assert_eq!(reranked.len(), 3);
    assert!(
        reranked[0].chunk.text.contains("Canada"),
        "{:?}",
        reranked[0].chunk.text
    );
    assert_eq!(reranked[0].rerank_score, Some(10.0));
    assert!(reranked.windows(2).all(|w| w[0].score >= w[1].score));
}

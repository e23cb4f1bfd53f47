//! PDF files: the text layer, one section per page.
//!
//! Owns: loading with `lopdf` under a decompression bound, page text
//! extraction, the Info-dictionary title, and telling encrypted and
//! image-only PDFs apart from broken ones. Depends on nothing else in the
//! crate (only the shared helpers of `formats`).
//!
//! Invariant: never panics on file contents: the whole of `lopdf`'s work
//! runs under `catch_unwind`, and a panic there becomes
//! `FormatError::Malformed`. A PDF that needs a password is
//! `EncryptedPdf`; one whose pages hold no text is `NoText`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use lopdf::{Document, LoadOptions, Object};

use super::{title_from_path, FormatError, ParseLimits, ParsedDocument, Section, SourceType};

const FORMAT: &str = "PDF";

enum Extracted {
    NeedsPassword,
    Text {
        title: Option<String>,
        pages: Vec<(u32, String)>,
        page_count: usize,
        first_error: Option<String>,
    },
}

pub(super) fn parse(
    path: &Path,
    bytes: &[u8],
    limits: &ParseLimits,
) -> Result<ParsedDocument, FormatError> {
    let stream_limit = usize::try_from(limits.max_file_bytes).unwrap_or(usize::MAX);
    let outcome = catch_unwind(AssertUnwindSafe(|| extract(bytes, stream_limit)));
    let extracted = match outcome {
        Ok(Ok(extracted)) => extracted,
        Ok(Err(reason)) => {
            if contains(bytes, b"/Encrypt") {
                return Err(FormatError::EncryptedPdf {
                    path: path.to_path_buf(),
                });
            }
            return Err(FormatError::malformed(path, FORMAT, reason));
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".to_string());
            return Err(FormatError::malformed(
                path,
                FORMAT,
                format!("the PDF reader failed: {what}"),
            ));
        }
    };
    let (title, pages, page_count, first_error) = match extracted {
        Extracted::NeedsPassword => {
            return Err(FormatError::EncryptedPdf {
                path: path.to_path_buf(),
            })
        }
        Extracted::Text {
            title,
            pages,
            page_count,
            first_error,
        } => (title, pages, page_count, first_error),
    };
    if pages.is_empty() {
        return Err(match first_error {
            Some(reason) => FormatError::malformed(path, FORMAT, reason),
            None => FormatError::NoText {
                path: path.to_path_buf(),
            },
        });
    }
    let title = title.unwrap_or_else(|| title_from_path(path));
    let mut doc = ParsedDocument::new("", title, SourceType::Pdf);
    doc.metadata.insert("pages".into(), page_count.into());
    doc.sections = pages
        .into_iter()
        .map(|(number, text)| Section {
            heading_path: vec![format!("Page {number}")],
            text,
        })
        .collect();
    Ok(doc)
}

/// Everything that touches `lopdf`; errors are plain reasons.
fn extract(bytes: &[u8], stream_limit: usize) -> Result<Extracted, String> {
    let options = LoadOptions {
        max_decompressed_size: Some(stream_limit),
        ..LoadOptions::default()
    };
    let doc = match Document::load_mem_with_options(bytes, options) {
        Ok(doc) => doc,
        Err(lopdf::Error::InvalidPassword) => return Ok(Extracted::NeedsPassword),
        Err(e) => return Err(e.to_string()),
    };
    // A document opened with the empty user password has had its /Encrypt
    // entry removed; one still carrying it could not be decrypted.
    if doc.is_encrypted() || doc.trailer.has(b"Encrypt") {
        return Ok(Extracted::NeedsPassword);
    }
    let title = info_title(&doc);
    let numbers: Vec<u32> = doc.get_pages().keys().copied().collect();
    let mut pages = Vec::new();
    let mut first_error = None;
    for number in &numbers {
        let mut text = String::new();
        for chunk in doc.extract_text_chunks_with_limit(&[*number], stream_limit) {
            match chunk {
                Ok(piece) => text.push_str(&piece),
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("page {number}: {e}"));
                }
            }
        }
        let text = tidy(&text);
        if !text.is_empty() {
            pages.push((*number, text));
        }
    }
    Ok(Extracted::Text {
        title,
        pages,
        page_count: numbers.len(),
        first_error,
    })
}

fn info_title(doc: &Document) -> Option<String> {
    let info = doc.trailer.get(b"Info").ok()?;
    let info = match info {
        Object::Reference(id) => doc.get_dictionary(*id).ok()?,
        Object::Dictionary(dict) => dict,
        _ => return None,
    };
    let title = info.get(b"Title").ok()?;
    let title = match title {
        Object::Reference(id) => doc.get_object(*id).ok()?,
        other => other,
    };
    let text = lopdf::decode_text_string(title).ok()?;
    let text = text.trim().trim_matches('\0').trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Trims line ends and collapses runs of blank lines.
fn tidy(text: &str) -> String {
    let mut out = String::new();
    let mut blank_run = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Stream, StringFormat};

    /// A PDF whose pages each show their lines with Helvetica `Tj`s.
    fn text_pdf(title: Option<&str>, pages: &[&[&str]]) -> Vec<u8> {
        let mut doc = Document::with_version("1.5");
        let pages_id = doc.new_object_id();
        let font_id = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        });
        let resources_id = doc.add_object(dictionary! {
            "Font" => dictionary! { "F1" => font_id },
        });
        let mut kids = Vec::new();
        for lines in pages {
            let mut ops = vec![
                Operation::new("BT", vec![]),
                Operation::new("Tf", vec!["F1".into(), 12.into()]),
                Operation::new("Td", vec![72.into(), 720.into()]),
            ];
            for line in *lines {
                ops.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
                ops.push(Operation::new("T*", vec![]));
            }
            ops.push(Operation::new("ET", vec![]));
            let content = Content { operations: ops };
            let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
            let page_id = doc.add_object(dictionary! {
                "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
            });
            kids.push(Object::Reference(page_id));
        }
        let count = kids.len() as i64;
        doc.objects.insert(
            pages_id,
            Object::Dictionary(dictionary! {
                "Type" => "Pages", "Kids" => kids, "Count" => count,
                "Resources" => resources_id,
                "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
            }),
        );
        let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        doc.trailer.set("Root", catalog_id);
        if let Some(title) = title {
            let info_id = doc.add_object(dictionary! {
                "Title" => Object::String(title.as_bytes().to_vec(), StringFormat::Literal),
            });
            doc.trailer.set("Info", info_id);
        }
        let mut out = Vec::new();
        doc.save_to(&mut out).unwrap();
        out
    }

    fn limits() -> ParseLimits {
        ParseLimits::default()
    }

    #[test]
    fn extracts_text_per_page() {
        let bytes = text_pdf(
            Some("Warranty terms"),
            &[
                &["Warranty covers two years."],
                &["Returns need a receipt.", "Keep the box."],
            ],
        );
        let doc = parse(Path::new("warranty.pdf"), &bytes, &limits()).unwrap();
        assert_eq!(doc.title, "Warranty terms");
        assert_eq!(doc.source_type, SourceType::Pdf);
        assert_eq!(doc.metadata["pages"], 2);
        assert_eq!(doc.sections.len(), 2);
        assert_eq!(doc.sections[0].heading_path, ["Page 1"]);
        assert!(doc.sections[0].text.contains("Warranty covers two years."));
        assert_eq!(doc.sections[1].heading_path, ["Page 2"]);
        assert!(doc.sections[1].text.contains("Returns need a receipt."));
        assert!(doc.sections[1].text.contains("Keep the box."));
    }

    #[test]
    fn untitled_pdf_uses_file_stem() {
        let bytes = text_pdf(None, &[&["Hello"]]);
        let doc = parse(Path::new("dir/Price list.pdf"), &bytes, &limits()).unwrap();
        assert_eq!(doc.title, "Price list");
    }

    #[test]
    fn pages_without_text_are_no_text() {
        let bytes = text_pdf(None, &[&[], &[]]);
        let err = parse(Path::new("scan.pdf"), &bytes, &limits()).unwrap_err();
        assert!(matches!(err, FormatError::NoText { .. }), "{err:?}");
        assert!(err.to_string().contains("scan.pdf"));
    }

    #[test]
    fn encrypted_pdf_is_reported() {
        let mut doc = Document::with_version("1.4");
        let pages_id = doc.new_object_id();
        doc.objects.insert(
            pages_id,
            Object::Dictionary(
                dictionary! { "Type" => "Pages", "Kids" => Vec::<Object>::new(), "Count" => 0 },
            ),
        );
        let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
        let encrypt_id = doc.add_object(dictionary! {
            "Filter" => "Standard", "V" => 1, "R" => 2, "P" => -44,
            "O" => Object::String(vec![0x5a; 32], StringFormat::Hexadecimal),
            "U" => Object::String(vec![0xa5; 32], StringFormat::Hexadecimal),
        });
        doc.trailer.set("Root", catalog_id);
        doc.trailer.set("Encrypt", encrypt_id);
        doc.trailer.set(
            "ID",
            vec![
                Object::String(vec![1; 16], StringFormat::Hexadecimal),
                Object::String(vec![1; 16], StringFormat::Hexadecimal),
            ],
        );
        let mut bytes = Vec::new();
        doc.save_to(&mut bytes).unwrap();
        let err = parse(Path::new("locked.pdf"), &bytes, &limits()).unwrap_err();
        assert!(matches!(err, FormatError::EncryptedPdf { .. }), "{err:?}");
        assert!(err.to_string().contains("locked.pdf"));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let inputs: [&[u8]; 5] = [
            b"this is not a pdf at all",
            b"",
            b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF",
            b"%PDF-1.4\n\xff\xfe\x00\x01garbage stream endstream obj 9999999999 0 R <<<<<<<<<<",
            b"%PDF-1.4\nxref\n0 99999999\ntrailer<</Size -5/Root 1 0 R>>\nstartxref\n9\n%%EOF",
        ];
        for bytes in inputs {
            match parse(Path::new("junk.pdf"), bytes, &limits()) {
                Err(FormatError::Malformed { format, .. }) => assert_eq!(format, "PDF"),
                Err(FormatError::NoText { .. }) => {}
                other => panic!("expected Malformed for {bytes:?}, got {other:?}"),
            }
        }
        let mut truncated = text_pdf(None, &[&["Some text here"]]);
        truncated.truncate(truncated.len() / 2);
        let _ = parse(Path::new("cut.pdf"), &truncated, &limits());
    }
}

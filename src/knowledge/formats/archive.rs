//! Zip archives (Notion/Confluence exports) and the bounded zip reader that
//! DOCX shares.
//!
//! Owns: zip-bomb defence (entry count, declared total size, per-member
//! compression ratio, and the actual bytes inflated, which may not pass a
//! member's declared size), member path hygiene (no `..`, no absolute
//! paths, no nested zips), and per-member error collection. Depends on
//! nothing else in the crate (only the other `formats` parsers).
//!
//! Invariant: no member is inflated past its declared size, no member over
//! `max_file_bytes` is read, and the declared sizes of all members together
//! stay within `max_archive_total_bytes`; so memory use is bounded by the
//! limits whatever the archive claims. A member that fails to parse never
//! fails the archive; a lying archive does.

use std::io::{Cursor, ErrorKind, Read};
use std::path::{Path, PathBuf};

use zip::ZipArchive;

use super::{detect, parse_single, Format, FormatError, KindHint, ParseLimits, ParseOutput};

/// Members at or under this size are not ratio-checked (tiny files of
/// repeated text compress very well and are harmless).
const RATIO_FLOOR: u64 = 1024 * 1024;

/// A zip opened under `ParseLimits`.
pub(super) struct SafeZip<'a> {
    path: &'a Path,
    format: &'static str,
    max_member_bytes: u64,
    zip: ZipArchive<Cursor<&'a [u8]>>,
}

impl<'a> SafeZip<'a> {
    /// Opens the archive and checks what its directory declares.
    pub(super) fn open(
        path: &'a Path,
        bytes: &'a [u8],
        limits: &ParseLimits,
        format: &'static str,
    ) -> Result<Self, FormatError> {
        let zip = ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| FormatError::malformed(path, format, e.to_string()))?;
        if zip.len() > limits.max_archive_entries {
            return Err(FormatError::TooManyEntries {
                path: path.to_path_buf(),
                entries: zip.len(),
                limit: limits.max_archive_entries,
            });
        }
        let mut declared: u64 = 0;
        for index in 0..zip.len() {
            let entry = zip
                .by_index_data(index)
                .map_err(|e| FormatError::malformed(path, format, e.to_string()))?;
            let size = entry.size();
            declared = declared.saturating_add(size);
            let ratio = size / entry.compressed_size().max(1);
            if size > RATIO_FLOOR && ratio > limits.max_compression_ratio {
                return Err(FormatError::CompressionRatio {
                    path: path.to_path_buf(),
                    member: entry_name(&entry),
                    ratio,
                    limit: limits.max_compression_ratio,
                });
            }
        }
        if declared > limits.max_archive_total_bytes {
            return Err(FormatError::ArchiveTooLarge {
                path: path.to_path_buf(),
                declared,
                limit: limits.max_archive_total_bytes,
            });
        }
        Ok(SafeZip {
            path,
            format,
            max_member_bytes: limits.max_file_bytes,
            zip,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.zip.len()
    }

    pub(super) fn index_of(&self, name: &str) -> Option<usize> {
        self.zip.index_for_name(name)
    }

    /// The member's name and whether it is a directory.
    fn describe(&self, index: usize) -> Result<(String, bool), FormatError> {
        let entry = self
            .zip
            .by_index_data(index)
            .map_err(|e| FormatError::malformed(self.path, self.format, e.to_string()))?;
        Ok((entry_name(&entry), entry.is_dir()))
    }

    /// Inflates one member, never past its declared size.
    /// `SizeMismatch` means the archive lies about its sizes; other errors
    /// concern this member alone.
    pub(super) fn read(&mut self, index: usize) -> Result<Vec<u8>, FormatError> {
        let (path, format, max) = (self.path, self.format, self.max_member_bytes);
        let mut file = self
            .zip
            .by_index(index)
            .map_err(|e| FormatError::malformed(path, format, e.to_string()))?;
        let member = file.name().map(|n| n.into_owned()).unwrap_or_default();
        let member_path = path.join(&member);
        if file.encrypted() {
            return Err(FormatError::malformed(
                &member_path,
                format,
                "the member is encrypted",
            ));
        }
        let declared = file.size();
        if declared > max {
            return Err(FormatError::TooLarge {
                path: member_path,
                size: declared,
                limit: max,
            });
        }
        let lie = |member: String| FormatError::SizeMismatch {
            path: path.to_path_buf(),
            member,
            declared,
        };
        let mut data = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
        // The zip reader stops at the declared size itself (an InvalidData
        // error naming the declared size); `take` is the bound of our own.
        let read = (&mut file)
            .take(declared.saturating_add(1))
            .read_to_end(&mut data);
        match read {
            Err(e) if e.kind() == ErrorKind::InvalidData && e.to_string().contains("declared") => {
                Err(lie(member))
            }
            Err(e) => Err(FormatError::malformed(
                &member_path,
                format,
                format!("cannot inflate: {e}"),
            )),
            Ok(_) if data.len() as u64 > declared => Err(lie(member)),
            Ok(_) => Ok(data),
        }
    }
}

fn entry_name(entry: &zip::read::ZipFileEntry<'_>) -> String {
    match entry.name() {
        Ok(name) => name.into_owned(),
        Err(_) => String::from_utf8_lossy(entry.name_raw()).into_owned(),
    }
}

/// Parses every supported member of a zip archive.
pub(super) fn parse(
    path: &Path,
    bytes: &[u8],
    hint: KindHint,
    limits: &ParseLimits,
) -> Result<ParseOutput, FormatError> {
    let mut zip = SafeZip::open(path, bytes, limits, "zip")?;
    let archive_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = ParseOutput::default();
    for index in 0..zip.len() {
        let (raw_name, is_dir) = zip.describe(index)?;
        if is_dir {
            continue;
        }
        let Some(name) = safe_member_name(&raw_name) else {
            continue;
        };
        let member_path: PathBuf = path.join(&name);
        let format = match detect(Path::new(&name), hint) {
            Some(Format::Archive) | None => continue,
            Some(format) => format,
        };
        let data = match zip.read(index) {
            Ok(data) => data,
            Err(e @ FormatError::SizeMismatch { .. }) => return Err(e),
            Err(e) => {
                out.member_errors.push((name, e));
                continue;
            }
        };
        match parse_single(&member_path, format, &data, hint, limits) {
            Ok(documents) => {
                for mut doc in documents {
                    doc.key = if doc.key.is_empty() {
                        name.clone()
                    } else {
                        format!("{name}#{}", doc.key)
                    };
                    doc.metadata
                        .insert("archive".into(), archive_name.clone().into());
                    out.documents.push(doc);
                }
            }
            Err(e) => out.member_errors.push((name, e)),
        }
    }
    Ok(out)
}

/// The member's path with `/` separators, or `None` for paths to skip:
/// absolute, escaping (`..`), or platform metadata (`__MACOSX`, `._x`).
fn safe_member_name(raw: &str) -> Option<String> {
    let name = raw.replace('\\', "/");
    if name.starts_with('/') || name.contains('\0') {
        return None;
    }
    let parts: Vec<&str> = name
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let first = parts.first()?;
    if first.contains(':') || *first == "__MACOSX" {
        return None;
    }
    if parts.contains(&"..") || parts.last()?.starts_with("._") {
        return None;
    }
    Some(parts.join("/"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipWriter};

    /// A deflated zip of (name, contents) members.
    pub(in super::super) fn build_zip(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        for (name, data) in members {
            writer.start_file(*name, options).unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    /// One deflated member of `len` zero bytes, written in 1 MiB pieces.
    fn zeros_zip(name: &str, len: usize) -> Vec<u8> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        writer.start_file(name, options).unwrap();
        let piece = vec![0u8; 1024 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(piece.len());
            writer.write_all(&piece[..n]).unwrap();
            left -= n;
        }
        writer.finish().unwrap().into_inner()
    }

    fn parse_zip(name: &str, bytes: &[u8]) -> Result<ParseOutput, FormatError> {
        super::super::parse_bytes(
            Path::new(name),
            bytes,
            KindHint::Auto,
            &ParseLimits::default(),
        )
    }

    #[test]
    fn parses_supported_members_and_collects_failures() {
        let bytes = build_zip(&[
            (
                "Export/Refund policy 3f2a9c0d1e2b4a5c8d7e6f5a4b3c2d1e.md",
                b"Refunds within 30 days.",
            ),
            ("Export/Sub/Shipping.md", b"# Shipping\nTwo days."),
            ("Export/broken.txt", b"bad \xFF byte"),
            ("Export/logo.png", b"\x89PNG"),
            ("Export/inner.zip", b"PK\x03\x04"),
            ("../escape.md", b"# Escaped"),
            ("__MACOSX/Export/._Shipping.md", b"\0\0"),
        ]);
        let out = parse_zip("uploads/notion.zip", &bytes).unwrap();
        let keys: Vec<&str> = out.documents.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "Export/Refund policy 3f2a9c0d1e2b4a5c8d7e6f5a4b3c2d1e.md",
                "Export/Sub/Shipping.md"
            ]
        );
        assert_eq!(out.documents[0].title, "Refund policy");
        assert_eq!(out.documents[1].title, "Shipping");
        assert_eq!(out.documents[1].sections[0].heading_path, ["Shipping"]);
        for doc in &out.documents {
            assert_eq!(doc.metadata["archive"], "notion.zip");
        }
        assert_eq!(out.member_errors.len(), 1);
        let (member, err) = &out.member_errors[0];
        assert_eq!(member, "Export/broken.txt");
        assert!(matches!(err, FormatError::InvalidUtf8 { offset: 4, .. }));
        assert!(
            err.to_string().contains("notion.zip/Export/broken.txt"),
            "{err}"
        );
    }

    #[test]
    fn zip_bomb_is_rejected_by_ratio() {
        let bytes = zeros_zip("bomb.md", 50 * 1024 * 1024);
        assert!(bytes.len() < 1024 * 1024);
        let err = parse_zip("bomb.zip", &bytes).unwrap_err();
        match &err {
            FormatError::CompressionRatio {
                member,
                ratio,
                limit,
                ..
            } => {
                assert_eq!(member, "bomb.md");
                assert!(*ratio > 100 && *limit == 100);
            }
            other => panic!("expected CompressionRatio, got {other:?}"),
        }
        assert!(err.to_string().contains("bomb.zip"));
        assert!(err.to_string().contains("zip bomb"));
    }

    #[test]
    fn lying_declared_size_is_caught_while_reading() {
        let mut bytes = zeros_zip("liar.md", 5 * 1024 * 1024);
        // Claim 100 bytes in the local header and in the central directory.
        let lie = 100u32.to_le_bytes();
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        bytes[22..26].copy_from_slice(&lie);
        let central = bytes.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        bytes[central + 24..central + 28].copy_from_slice(&lie);
        let err = parse_zip("liar.zip", &bytes).unwrap_err();
        match &err {
            FormatError::SizeMismatch {
                member, declared, ..
            } => {
                assert_eq!(member, "liar.md");
                assert_eq!(*declared, 100);
            }
            other => panic!("expected SizeMismatch, got {other:?}"),
        }
        assert!(err.to_string().contains("liar.zip"));
    }

    #[test]
    fn entry_count_and_total_size_limits() {
        let bytes = build_zip(&[("a.md", b"a"), ("b.md", b"b"), ("c.md", b"c")]);
        let limits = ParseLimits {
            max_archive_entries: 2,
            ..ParseLimits::default()
        };
        let err = super::super::parse_bytes(Path::new("many.zip"), &bytes, KindHint::Auto, &limits)
            .unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::TooManyEntries {
                    entries: 3,
                    limit: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        let limits = ParseLimits {
            max_archive_total_bytes: 2,
            ..ParseLimits::default()
        };
        let err = super::super::parse_bytes(Path::new("big.zip"), &bytes, KindHint::Auto, &limits)
            .unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::ArchiveTooLarge {
                    declared: 3,
                    limit: 2,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn garbage_zip_is_malformed() {
        let err = parse_zip("junk.zip", b"not a zip file").unwrap_err();
        assert!(
            matches!(err, FormatError::Malformed { format: "zip", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn member_names_are_sanitised() {
        assert_eq!(safe_member_name("a\\b/./c.md").as_deref(), Some("a/b/c.md"));
        assert_eq!(safe_member_name("/etc/passwd.md"), None);
        assert_eq!(safe_member_name("C:/x.md"), None);
        assert_eq!(safe_member_name("a/../../x.md"), None);
        assert_eq!(safe_member_name("dir/"), Some("dir".to_string()));
    }
}

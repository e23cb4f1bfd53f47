//! BM25 search over the chunks' FTS5 index, and the metadata filters shared with vector
//! search.
//!
//! Owns turning free text into a safe FTS5 query: user text is never passed to MATCH as
//! syntax, so quotes, `AND`, `NEAR(` or `*` in a question cannot break or widen a search.
//! Depends on `store` and `types`.

use std::collections::HashSet;

use rusqlite::params_from_iter;
use rusqlite::types::Value as SqlValue;

use super::error::Result;
use super::store::Store;
use super::types::SearchFilter;

/// The FTS-only ranking keeps this many candidates per requested hit before filtering.
const HEAD_FACTOR: usize = 4;
/// At most this many distinct terms go into one query.
const MAX_TERMS: usize = 64;

/// English function words: in an OR query they match nearly every chunk and drown the terms
/// that carry the question. Kept when a query has nothing else.
const STOPWORDS: &[&str] = &[
    "a", "about", "am", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could",
    "did", "do", "does", "for", "from", "had", "has", "have", "he", "her", "hi", "his", "how", "i",
    "if", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "please", "she", "so",
    "that", "the", "their", "them", "there", "they", "this", "to", "was", "we", "were", "what",
    "when", "where", "which", "who", "why", "will", "with", "would", "you", "your",
];

/// `How do I reset my "PIN"?` → `"reset" OR "pin"`.
pub fn fts_query(text: &str) -> Option<String> {
    let mut seen = HashSet::new();
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .filter(|t| seen.insert(t.clone()))
        .collect();
    let content: Vec<&String> = words
        .iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect();
    let chosen = if content.is_empty() {
        words.iter().collect()
    } else {
        content
    };
    let terms: Vec<String> = chosen
        .into_iter()
        .take(MAX_TERMS)
        .map(|t| format!("\"{t}\""))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

/// SQL conditions on the documents table (alias `d`) for `filter`, with their parameters.
fn filter_sql(filter: &SearchFilter, params: &mut Vec<SqlValue>) -> String {
    let mut sql = String::new();
    let mut any_of = |column: &str, values: &[String], params: &mut Vec<SqlValue>| {
        if values.is_empty() {
            return;
        }
        sql.push_str(&format!(
            " AND d.{column} IN ({})",
            vec!["?"; values.len()].join(",")
        ));
        params.extend(values.iter().map(|v| SqlValue::Text(v.clone())));
    };
    any_of("source_type", &filter.source_types, params);
    any_of("language", &filter.languages, params);
    for tag in &filter.tags {
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM document_tags t WHERE t.document_id = d.id AND t.tag = ?)",
        );
        params.push(SqlValue::Text(tag.clone()));
    }
    sql
}

impl Store {
    /// Best BM25 matches, best first, as (chunk id, score); higher scores are better.
    pub fn bm25_search(
        &self,
        collection_ids: &[i64],
        query: &str,
        filter: &SearchFilter,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>> {
        let Some(fts) = fts_query(query) else {
            return Ok(Vec::new());
        };
        if collection_ids.is_empty() {
            return Ok(Vec::new());
        }
        // First rank inside the FTS index alone, which is cheap, and filter only the head of
        // that list; when filters or other collections thin the head out below `limit`, rank
        // every match instead.
        let head = self.bm25_query(
            collection_ids,
            &fts,
            filter,
            limit,
            Some(limit * HEAD_FACTOR),
        )?;
        if head.len() >= limit {
            return Ok(head);
        }
        self.bm25_query(collection_ids, &fts, filter, limit, None)
    }

    fn bm25_query(
        &self,
        collection_ids: &[i64],
        fts: &str,
        filter: &SearchFilter,
        limit: usize,
        head: Option<usize>,
    ) -> Result<Vec<(i64, f64)>> {
        let mut params = vec![SqlValue::Text(fts.to_string())];
        let head_limit = match head {
            Some(n) => {
                params.push(SqlValue::Integer(n as i64));
                "LIMIT ?"
            }
            None => "",
        };
        params.extend(collection_ids.iter().map(|&id| SqlValue::Integer(id)));
        let filters = filter_sql(filter, &mut params);
        params.push(SqlValue::Integer(limit as i64));
        // Headings weigh a little less than body text: they repeat across a document's chunks.
        let sql = format!(
            "SELECT k.id, f.score
             FROM (SELECT rowid, bm25(chunks_fts, 0.5, 1.0) AS score FROM chunks_fts
                   WHERE chunks_fts MATCH ? ORDER BY score {head_limit}) f
                  JOIN chunks k ON k.id = f.rowid
                  JOIN documents d ON d.id = k.document_id
             WHERE k.collection_id IN ({}){filters}
             ORDER BY f.score LIMIT ?",
            vec!["?"; collection_ids.len()].join(",")
        );
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params), |r| {
                Ok((r.get::<_, i64>(0)?, -r.get::<_, f64>(1)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The chunks of a collection that pass `filter`, for filtering vector search.
    pub fn filtered_chunk_ids(
        &self,
        collection_id: i64,
        filter: &SearchFilter,
    ) -> Result<HashSet<i64>> {
        let mut params = vec![SqlValue::Integer(collection_id)];
        let filters = filter_sql(filter, &mut params);
        let sql = format!(
            "SELECT k.id FROM chunks k JOIN documents d ON d.id = k.document_id
             WHERE k.collection_id = ?{filters}"
        );
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params), |r| r.get::<_, i64>(0))?;
            Ok(rows.collect::<rusqlite::Result<HashSet<_>>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_syntax_in_user_text_is_quoted_away() {
        assert_eq!(
            fts_query(r#"reset "PIN" NEAR(card) AND*"#).as_deref(),
            Some(r#""reset" OR "pin" OR "near" OR "card""#)
        );
        assert_eq!(fts_query("?!").as_deref(), None);
    }

    #[test]
    fn function_words_are_dropped_unless_nothing_else_is_left() {
        assert_eq!(
            fts_query("when can I call you").as_deref(),
            Some(r#""call""#)
        );
        assert_eq!(
            fts_query("Who are you?").as_deref(),
            Some(r#""who" OR "are" OR "you""#)
        );
    }
}

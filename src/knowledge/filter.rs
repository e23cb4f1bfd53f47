//! Metadata filters on search: which chunks of a collection pass a filter on source type,
//! language and tags, asked of the store in SQL. Vector and keyword search both rank only
//! the chunks in that set. Depends on `store` and `types`.

use std::collections::HashSet;

use rusqlite::params_from_iter;
use rusqlite::types::Value as SqlValue;

use super::error::Result;
use super::store::Store;
use super::types::SearchFilter;

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

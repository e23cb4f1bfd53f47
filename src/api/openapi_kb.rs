//! The OpenAPI description of the knowledge routes: files, vector stores and their files and
//! batches, vector-store search, and the `/admin/kb` routes. `openapi` merges these into the
//! one document, whose helpers and error responses they share.
//!
//! Must describe every status and field those routes can send: the client suites fuzz the
//! server against this document. Must not depend on the handlers.

use serde_json::{json, Map, Value};

use super::openapi::{error_responses, json_body, ok_json};

/// Every knowledge route can fail in each of these ways.
const ERRORS: [&str; 7] = ["400", "401", "404", "409", "413", "429", "503"];

fn responses(ok: Value) -> Value {
    let mut r = error_responses(&ERRORS);
    r.insert("200".into(), ok);
    Value::Object(r)
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn ok_ref(description: &str, schema: &str) -> Value {
    ok_json(description, schema_ref(schema))
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query_param(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema})
}

/// The paging parameters of OpenAI's list routes, with `limit` up to `max`.
fn paging(max: u64, before: bool) -> Vec<Value> {
    let mut p = vec![
        query_param(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": max}),
        ),
        query_param("order", json!({"enum": ["asc", "desc"]})),
        query_param("after", json!({"type": "string"})),
    ];
    if before {
        p.push(query_param("before", json!({"type": "string"})));
    }
    p
}

fn op(id: &str, parameters: Vec<Value>, body: Option<Value>, ok: Value) -> Value {
    let mut o = Map::new();
    o.insert("operationId".into(), json!(id));
    if !parameters.is_empty() {
        o.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(b) = body {
        o.insert("requestBody".into(), b);
    }
    o.insert("responses".into(), responses(ok));
    Value::Object(o)
}

fn metadata_schema() -> Value {
    json!({"type": ["object", "null"], "maxProperties": 16,
           "propertyNames": {"minLength": 1, "maxLength": 64},
           "additionalProperties": {"type": "string", "maxLength": 512}})
}

fn store_param() -> Value {
    path_param("vector_store_id")
}

fn file_paths(p: &mut Map<String, Value>) {
    let file_id = || path_param("file_id");
    let upload = json!({"required": true, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "purpose"], "properties": {
            "file": {"type": "string", "format": "binary"},
            "purpose": {"type": "string", "minLength": 1, "maxLength": 64}}}}}});
    let mut list = paging(10_000, false);
    list.push(query_param("purpose", json!({"type": "string"})));
    p.insert(
        "/v1/files".into(),
        json!({
            "post": op("createFile", vec![], Some(upload), ok_ref("The stored file", "FileObject")),
            "get": op("listFiles", list, None, ok_ref("A page of files", "FileList")),
        }),
    );
    p.insert("/v1/files/{file_id}".into(), json!({
        "get": op("retrieveFile", vec![file_id()], None, ok_ref("The file", "FileObject")),
        "delete": op("deleteFile", vec![file_id()], None, ok_ref("Deleted, and out of every vector store", "Deleted")),
    }));
    let bytes = json!({"description": "The file's bytes as uploaded",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
    p.insert(
        "/v1/files/{file_id}/content".into(),
        json!({
            "get": op("downloadFile", vec![file_id()], None, bytes),
        }),
    );
}

fn store_paths(p: &mut Map<String, Value>) {
    let create = json_body(json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 256},
        "description": {"type": "string"},
        "file_ids": {"type": "array", "maxItems": 500, "items": {"type": "string"}},
        "metadata": metadata_schema(),
        "chunking_strategy": schema_ref("ChunkingStrategy"),
        "expires_after": {"type": "null"}}}));
    let modify = json_body(json!({"type": "object", "properties": {
        "name": {"type": ["string", "null"], "maxLength": 256},
        "metadata": metadata_schema(),
        "expires_after": {"type": "null"}}}));
    let store = "The vector store";
    p.insert("/v1/vector_stores".into(), json!({
        "post": op("createVectorStore", vec![], Some(create), ok_ref(store, "VectorStore")),
        "get": op("listVectorStores", paging(100, true), None, ok_ref("A page of vector stores, newest first", "VectorStoreList")),
    }));
    p.insert("/v1/vector_stores/{vector_store_id}".into(), json!({
        "get": op("retrieveVectorStore", vec![store_param()], None, ok_ref(store, "VectorStore")),
        "post": op("modifyVectorStore", vec![store_param()], Some(modify), ok_ref(store, "VectorStore")),
        "delete": op("deleteVectorStore", vec![store_param()], None, ok_ref("Deleted; its files are kept", "Deleted")),
    }));
    let search = json_body(
        json!({"type": "object", "required": ["query"], "properties": {
        "query": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "max_num_results": {"type": "integer", "minimum": 1, "maximum": 50},
        "filters": {"type": ["object", "null"]},
        "ranking_options": {"type": "object", "properties": {
            "ranker": {"enum": ["none", "auto", "default-2024-11-15"]},
            "score_threshold": {"type": "number", "minimum": 0, "maximum": 1}}},
        "rewrite_query": {"type": "boolean"}}}),
    );
    p.insert("/v1/vector_stores/{vector_store_id}/search".into(), json!({
        "post": op("searchVectorStore", vec![store_param()], Some(search),
            ok_ref("Chunks by hybrid (BM25 and vector) search, best first", "VectorStoreSearchPage")),
    }));
}

fn store_file_paths(p: &mut Map<String, Value>) {
    let both = || vec![store_param(), path_param("file_id")];
    let attributes = schema_ref("Attributes");
    let attach = json_body(
        json!({"type": "object", "required": ["file_id"], "properties": {
        "file_id": {"type": "string"}, "attributes": attributes,
        "chunking_strategy": schema_ref("ChunkingStrategy")}}),
    );
    let update = json_body(json!({"type": "object", "properties": {"attributes": attributes}}));
    let mut list = paging(100, true);
    list.push(query_param(
        "filter",
        json!({"enum": ["in_progress", "completed", "failed", "cancelled"]}),
    ));
    let mut list_params = vec![store_param()];
    list_params.extend(list.clone());
    let file = "The vector-store file; a file that could not be ingested has status `failed`";
    p.insert("/v1/vector_stores/{vector_store_id}/files".into(), json!({
        "post": op("createVectorStoreFile", vec![store_param()], Some(attach), ok_ref(file, "VectorStoreFile")),
        "get": op("listVectorStoreFiles", list_params, None, ok_ref("A page of the store's files", "VectorStoreFileList")),
    }));
    p.insert("/v1/vector_stores/{vector_store_id}/files/{file_id}".into(), json!({
        "get": op("retrieveVectorStoreFile", both(), None, ok_ref(file, "VectorStoreFile")),
        "post": op("updateVectorStoreFile", both(), Some(update), ok_ref(file, "VectorStoreFile")),
        "delete": op("deleteVectorStoreFile", both(), None, ok_ref("Its documents are out of the store; the file is kept", "Deleted")),
    }));
    p.insert(
        "/v1/vector_stores/{vector_store_id}/files/{file_id}/content".into(),
        json!({
            "get": op("retrieveVectorStoreFileContent", both(), None,
                ok_ref("The text extracted from the file", "VectorStoreFileContent")),
        }),
    );
    let batch = json_body(json!({"type": "object", "properties": {
        "file_ids": {"type": "array", "maxItems": 500, "items": {"type": "string"}},
        "files": {"type": "array", "maxItems": 500, "items": {"type": "object", "required": ["file_id"], "properties": {
            "file_id": {"type": "string"}, "attributes": attributes,
            "chunking_strategy": schema_ref("ChunkingStrategy")}}},
        "attributes": attributes,
        "chunking_strategy": schema_ref("ChunkingStrategy")}}));
    let batch_params = || vec![store_param(), path_param("batch_id")];
    let done = "The batch: its files are ingested before this returns";
    p.insert("/v1/vector_stores/{vector_store_id}/file_batches".into(), json!({
        "post": op("createVectorStoreFileBatch", vec![store_param()], Some(batch), ok_ref(done, "VectorStoreFileBatch")),
    }));
    p.insert("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}".into(), json!({
        "get": op("retrieveVectorStoreFileBatch", batch_params(), None, ok_ref(done, "VectorStoreFileBatch")),
    }));
    p.insert("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel".into(), json!({
        "post": op("cancelVectorStoreFileBatch", batch_params(), None, ok_ref(done, "VectorStoreFileBatch")),
    }));
    let mut batch_list = batch_params();
    batch_list.extend(list);
    p.insert("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files".into(), json!({
        "get": op("listVectorStoreFileBatchFiles", batch_list, None, ok_ref("A page of the batch's files", "VectorStoreFileList")),
    }));
}

fn admin_paths(p: &mut Map<String, Value>) {
    let name = || path_param("name");
    let collection = "The collection";
    let create = json_body(
        json!({"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "embedding_model": {"type": "string"},
        "quantization": {"enum": ["f32", "f16", "i8"]},
        "chunk_tokens": {"type": "integer", "minimum": 0},
        "chunk_overlap": {"type": "integer", "minimum": 0},
        "metadata": {"type": "object"}}}),
    );
    p.insert("/admin/kb/collections".into(), json!({
        "get": op("adminListCollections", vec![], None, ok_ref("Every collection", "CollectionList")),
        "post": op("adminCreateCollection", vec![], Some(create), ok_ref(collection, "Collection")),
    }));
    p.insert(
        "/admin/kb/collections/{name}".into(),
        json!({
            "get": op("adminGetCollection", vec![name()], None, ok_ref(collection, "Collection")),
            "delete": op("adminDeleteCollection", vec![name()], None, ok_json("Deleted", json!({
                "type": "object", "required": ["name", "deleted"], "properties": {
                    "name": {"type": "string"}, "deleted": {"type": "boolean"}}}))),
        }),
    );
    let list = vec![
        name(),
        query_param(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 1000}),
        ),
        query_param("offset", json!({"type": "integer", "minimum": 0})),
    ];
    let upload_params = vec![
        name(),
        json!({"name": "filename", "in": "query", "required": true, "schema": {"type": "string", "minLength": 1}}),
        query_param(
            "kind",
            json!({"enum": ["auto", "tickets", "macros", "faq"]}),
        ),
        query_param("tag", json!({"type": "string"})),
    ];
    let raw = json!({"required": true, "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary"}}}});
    let documents = json!({"type": "object", "required": ["object", "data"], "properties": {
        "object": {"const": "list"}, "data": {"type": "array", "items": schema_ref("Document")}}});
    p.insert("/admin/kb/collections/{name}/documents".into(), json!({
        "get": op("adminListDocuments", list, None, ok_json("A page of documents", documents)),
        "post": op("adminUploadDocument", upload_params, Some(raw), ok_ref("What the ingest did", "IngestReport")),
    }));
    let doc_params = vec![
        name(),
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}),
    ];
    p.insert(
        "/admin/kb/collections/{name}/documents/{id}".into(),
        json!({
            "delete": op("adminDeleteDocument", doc_params, None, ok_json("Deleted", json!({
                "type": "object", "required": ["id", "deleted"], "properties": {
                    "id": {"type": "integer"}, "deleted": {"type": "boolean"}}}))),
        }),
    );
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let search = json_body(
        json!({"type": "object", "required": ["query"], "properties": {
        "query": {"type": "string"}, "top_k": {"type": "integer", "minimum": 1, "maximum": 100},
        "mode": {"enum": ["hybrid", "bm25", "vector"]},
        "source_types": strings, "tags": strings, "languages": strings}}),
    );
    let hits = json!({"type": "object", "required": ["object", "data"], "properties": {
        "object": {"const": "list"}, "data": {"type": "array", "items": schema_ref("SearchHit")}}});
    p.insert("/admin/kb/collections/{name}/search".into(), json!({
        "post": op("adminSearch", vec![name()], Some(search), ok_json("Hits, best first", hits)),
    }));
    p.insert("/admin/kb/collections/{name}/rebuild".into(), json!({
        "post": op("adminRebuildIndex", vec![name()], None, ok_json("The vectors in the rebuilt index", json!({
            "type": "object", "required": ["vectors"], "properties": {"vectors": {"type": "integer"}}}))),
    }));
}

pub fn paths() -> Map<String, Value> {
    let mut p = Map::new();
    file_paths(&mut p);
    store_paths(&mut p);
    store_file_paths(&mut p);
    admin_paths(&mut p);
    p
}

fn list_of(item: &str) -> Value {
    json!({"type": "object", "required": ["object", "data", "has_more"], "properties": {
        "object": {"const": "list"}, "data": {"type": "array", "items": schema_ref(item)},
        "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]},
        "has_more": {"type": "boolean"}}})
}

fn openai_schemas(s: &mut Map<String, Value>) {
    let int = json!({"type": "integer"});
    let string = json!({"type": "string"});
    s.insert("FileObject".into(), json!({"type": "object",
        "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"], "properties": {
            "id": string, "object": {"const": "file"}, "bytes": int, "created_at": int,
            "filename": string, "purpose": string, "status": {"enum": ["uploaded", "processed", "error"]},
            "expires_at": {"type": ["integer", "null"]}, "status_details": {"type": ["string", "null"]}}}));
    s.insert("FileList".into(), list_of("FileObject"));
    s.insert(
        "Deleted".into(),
        json!({"type": "object", "required": ["id", "object", "deleted"], "properties": {
        "id": string, "object": string, "deleted": {"type": "boolean"}}}),
    );
    s.insert(
        "FileCounts".into(),
        json!({"type": "object",
        "required": ["in_progress", "completed", "failed", "cancelled", "total"], "properties": {
            "in_progress": int, "completed": int, "failed": int, "cancelled": int, "total": int}}),
    );
    s.insert(
        "Attributes".into(),
        json!({"type": ["object", "null"], "maxProperties": 16,
        "additionalProperties": {"type": ["string", "number", "boolean"]}}),
    );
    s.insert("ChunkingStrategy".into(), json!({"oneOf": [
        {"type": "object", "required": ["type"], "properties": {"type": {"const": "auto"}}},
        {"type": "object", "required": ["type", "static"], "properties": {"type": {"const": "static"},
            "static": {"type": "object", "required": ["max_chunk_size_tokens", "chunk_overlap_tokens"], "properties": {
                "max_chunk_size_tokens": {"type": "integer", "minimum": 1},
                "chunk_overlap_tokens": {"type": "integer", "minimum": 0}}}}}]}));
    s.insert("VectorStore".into(), json!({"type": "object",
        "required": ["id", "object", "created_at", "name", "usage_bytes", "file_counts", "status"], "properties": {
            "id": string, "object": {"const": "vector_store"}, "created_at": int, "name": string,
            "usage_bytes": int, "file_counts": schema_ref("FileCounts"),
            "status": {"enum": ["expired", "in_progress", "completed"]},
            "expires_after": {"type": ["object", "null"]}, "expires_at": {"type": ["integer", "null"]},
            "last_active_at": {"type": ["integer", "null"]}, "metadata": {"type": ["object", "null"]}}}));
    s.insert("VectorStoreList".into(), list_of("VectorStore"));
    let last_error = json!({"oneOf": [{"type": "null"}, {"type": "object", "required": ["code", "message"],
        "properties": {"code": {"enum": ["server_error", "unsupported_file", "invalid_file"]}, "message": string}}]});
    s.insert("VectorStoreFile".into(), json!({"type": "object",
        "required": ["id", "object", "usage_bytes", "created_at", "vector_store_id", "status"], "properties": {
            "id": string, "object": {"const": "vector_store.file"}, "usage_bytes": int, "created_at": int,
            "vector_store_id": string, "status": {"enum": ["in_progress", "completed", "cancelled", "failed"]},
            "last_error": last_error, "chunking_strategy": {"type": "object"},
            "attributes": schema_ref("Attributes")}}));
    s.insert("VectorStoreFileList".into(), list_of("VectorStoreFile"));
    s.insert("VectorStoreFileBatch".into(), json!({"type": "object",
        "required": ["id", "object", "vector_store_id", "status", "file_counts", "created_at"], "properties": {
            "id": string, "object": {"const": "vector_store.files_batch"}, "vector_store_id": string,
            "status": {"enum": ["in_progress", "completed", "cancelled", "failed"]},
            "file_counts": schema_ref("FileCounts"), "created_at": int}}));
    let text = json!({"type": "object", "required": ["type", "text"], "properties": {
        "type": {"const": "text"}, "text": string}});
    s.insert(
        "VectorStoreFileContent".into(),
        json!({"type": "object", "required": ["object", "data"], "properties": {
        "object": string, "data": {"type": "array", "items": text}, "has_more": {"type": "boolean"},
        "next_page": {"type": ["string", "null"]}}}),
    );
    s.insert("VectorStoreSearchPage".into(), json!({"type": "object",
        "required": ["object", "search_query", "data", "has_more"], "properties": {
            "object": {"const": "vector_store.search_results.page"},
            "search_query": {"type": "array", "items": string},
            "data": {"type": "array", "items": {"type": "object",
                "required": ["file_id", "filename", "score", "attributes", "content"], "properties": {
                    "file_id": {"type": ["string", "null"]}, "filename": string,
                    "score": {"type": "number", "minimum": 0, "maximum": 1},
                    "attributes": schema_ref("Attributes"), "content": {"type": "array", "items": text}}}},
            "has_more": {"type": "boolean"}, "next_page": {"type": ["string", "null"]}}}));
}

fn admin_schemas(s: &mut Map<String, Value>) {
    let int = json!({"type": "integer"});
    let string = json!({"type": "string"});
    s.insert("Collection".into(), json!({"type": "object",
        "required": ["id", "name", "embedding_model", "dimension", "quantization", "chunk_tokens",
                     "chunk_overlap", "metadata", "created_at", "num_documents", "num_chunks"], "properties": {
            "id": int, "name": string, "embedding_model": string,
            "embedding_path": {"type": ["string", "null"]}, "dimension": int,
            "quantization": {"enum": ["f32", "f16", "i8"]}, "chunk_tokens": int, "chunk_overlap": int,
            "metadata": {"type": "object"}, "generation": int, "created_at": int,
            "num_documents": int, "num_chunks": int}}));
    s.insert("CollectionList".into(), json!({"type": "object", "required": ["object", "data"], "properties": {
        "object": {"const": "list"}, "data": {"type": "array", "items": schema_ref("Collection")}}}));
    s.insert("Document".into(), json!({"type": "object",
        "required": ["id", "source", "doc_key", "source_type", "title", "tags", "num_chunks"], "properties": {
            "id": int, "source": string, "doc_key": string, "source_type": string, "title": string,
            "tags": {"type": "array", "items": string}, "num_chunks": int}}));
    s.insert("SearchHit".into(), json!({"type": "object",
        "required": ["score", "chunk_id", "document_id", "collection", "source", "text"], "properties": {
            "score": {"type": "number"}, "chunk_id": int, "document_id": int, "collection": string,
            "source": string, "text": string, "title": string}}));
    let count = int.clone();
    s.insert(
        "IngestReport".into(),
        json!({"type": "object",
        "required": ["files", "documents_added", "documents_updated", "documents_unchanged",
                     "documents_removed", "chunks_written", "errors"], "properties": {
            "files": count, "documents_added": count, "documents_updated": count,
            "documents_unchanged": count, "documents_removed": count, "chunks_written": count,
            "errors": {"type": "array", "items": {"type": "array", "items": string}}}}),
    );
}

pub fn schemas() -> Map<String, Value> {
    let mut s = Map::new();
    openai_schemas(&mut s);
    admin_schemas(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match x.as_str() {
                        Some(r) if k == "$ref" => out.push(r.to_string()),
                        _ => refs(x, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_operation_ids_are_unique() {
        let doc = super::super::openapi::document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} does not resolve"
            );
        }
        let mut ids = Vec::new();
        for item in doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            for op in item.as_object().into_iter().flat_map(|m| m.values()) {
                if let Some(id) = op["operationId"].as_str() {
                    ids.push(id.to_string());
                }
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "an operationId is used twice");
        assert!(doc["paths"]
            .get("/v1/vector_stores/{vector_store_id}/search")
            .is_some());
    }
}

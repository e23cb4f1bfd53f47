//! `GET /v1/models` and `GET /v1/models/{id}`: every name a model is served under, aliases
//! included, in OpenAI's model object shape.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::state::AppState;

#[derive(Debug, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Extension: the context window in tokens.
    pub max_model_len: usize,
    /// Extension: for an alias, the model's first name.
    pub root: String,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

fn object(state: &AppState, name: &str) -> Result<ModelObject, ApiError> {
    if let Some(e) = state.registry()?.embedders.get(name) {
        return Ok(ModelObject {
            id: name.to_string(),
            object: "model",
            created: e.created,
            owned_by: "enclave",
            max_model_len: e.model.max_input_len(),
            root: e.model.id().to_string(),
        });
    }
    let m = state.model(name)?;
    Ok(ModelObject {
        id: name.to_string(),
        object: "model",
        created: m.created,
        owned_by: "enclave",
        max_model_len: m.max_context(),
        root: m.id.clone(),
    })
}

pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let registry = state.registry()?;
    let data = registry
        .by_name
        .keys()
        .chain(registry.embedders.keys())
        .map(|name| object(&state, name))
        .collect::<Result<_, _>>()?;
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    object(&state, &id).map(Json)
}

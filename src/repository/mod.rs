//! Models on disk and their versions, in TensorFlow Serving's layout:
//! `<base_path>/<numeric version>/model.onnx`.
//!
//! The repository resolves a request's (name, version or label) to a loaded
//! [`Servable`] and reports each version's state. This first form loads the
//! highest version of each configured model once, at start-up; polling,
//! version policies, labels and reloads build on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ServableRequest, ServeError};
use crate::kernels::KernelRegistry;
use crate::servable::{LoadError, Servable};

/// The file name looked for in a version directory.
pub const ONNX_FILE: &str = "model.onnx";

/// One model to serve, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    pub base_path: PathBuf,
}

/// A version's place in its lifecycle (TensorFlow Serving's
/// `ModelVersionStatus.State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    Start,
    Loading,
    Available,
    Unloading,
    End,
}

/// A version's state and, for a failed version, why it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionStatus {
    pub version: i64,
    pub state: VersionState,
    pub error: Option<String>,
}

/// Which version a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionChoice {
    Latest,
    Specific(i64),
    Label(String),
}

/// Why the initial models could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("Could not find base path {path} for servable {model}: {source}")]
    BasePath { model: String, path: String, source: std::io::Error },
    #[error(
        "No versions of servable {model} found under base path {path}. Did you forget to name your leaf directory as a number (eg. '/1/')?"
    )]
    NoVersions { model: String, path: String },
    #[error("version {version} of model {model}: {message}")]
    NoModelFile { model: String, version: i64, message: String },
    #[error("version {version} of model {model} failed to load: {source}")]
    Load { model: String, version: i64, source: Box<LoadError> },
    #[error("model name '{0}' is configured twice")]
    DuplicateName(String),
}

#[derive(Debug)]
struct Model {
    /// Every version known, newest first when listed.
    versions: BTreeMap<i64, VersionStatus>,
    /// The loaded versions.
    servables: BTreeMap<i64, Arc<Servable>>,
}

/// All served models.
#[derive(Debug)]
pub struct ModelRepository {
    models: BTreeMap<String, Model>,
}

/// The numeric version directories under `base_path` (`0007` is 7; other
/// names are ignored).
///
/// # Errors
/// When the base path cannot be read.
pub fn version_dirs(base_path: &Path) -> std::io::Result<BTreeMap<i64, PathBuf>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(base_path)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|s| s.parse::<i64>().ok()).filter(|v| *v >= 0) else {
            continue;
        };
        if entry.path().is_dir() {
            out.insert(version, entry.path());
        }
    }
    Ok(out)
}

/// The model file of a version directory.
fn model_file(dir: &Path) -> Result<PathBuf, String> {
    let onnx = dir.join(ONNX_FILE);
    if onnx.is_file() {
        return Ok(onnx);
    }
    if dir.join("saved_model.pb").is_file() || dir.join("saved_model.pbtxt").is_file() {
        return Err(format!(
            "{} holds a TensorFlow SavedModel, which this build cannot load yet; export the model to ONNX as {ONNX_FILE}",
            dir.display()
        ));
    }
    Err(format!("{} holds no {ONNX_FILE}", dir.display()))
}

impl ModelRepository {
    /// Loads the highest version of every configured model.
    ///
    /// # Errors
    /// When a base path is missing or empty, or a model fails to load; the
    /// server must not start half-configured.
    pub fn load(configs: &[ModelConfig], registry: &KernelRegistry) -> Result<ModelRepository, RepositoryError> {
        let mut models = BTreeMap::new();
        for config in configs {
            if models.contains_key(&config.name) {
                return Err(RepositoryError::DuplicateName(config.name.clone()));
            }
            let path = config.base_path.display().to_string();
            let dirs = version_dirs(&config.base_path).map_err(|source| RepositoryError::BasePath {
                model: config.name.clone(),
                path: path.clone(),
                source,
            })?;
            let Some((&version, dir)) = dirs.iter().next_back() else {
                return Err(RepositoryError::NoVersions { model: config.name.clone(), path });
            };
            let file = model_file(dir).map_err(|message| RepositoryError::NoModelFile {
                model: config.name.clone(),
                version,
                message,
            })?;
            let servable = Servable::load_onnx(&config.name, version, &file, registry).map_err(|source| {
                RepositoryError::Load { model: config.name.clone(), version, source: Box::new(source) }
            })?;
            tracing::info!(model = %config.name, version, path = %file.display(), "loaded");
            models.insert(
                config.name.clone(),
                Model {
                    versions: BTreeMap::from([(
                        version,
                        VersionStatus { version, state: VersionState::Available, error: None },
                    )]),
                    servables: BTreeMap::from([(version, Arc::new(servable))]),
                },
            );
        }
        Ok(ModelRepository { models })
    }

    /// The names of all configured models.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// True while every configured model has an available version.
    pub fn all_available(&self) -> bool {
        self.models.values().all(|m| !m.servables.is_empty())
    }

    /// The servable a request asks for.
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown model or version, `INVALID_ARGUMENT` for an
    /// unknown label, with TensorFlow Serving's texts.
    pub fn resolve(&self, name: &str, choice: &VersionChoice) -> Result<Arc<Servable>, ServeError> {
        let model = self.models.get(name);
        match choice {
            VersionChoice::Latest => model
                .and_then(|m| m.servables.values().next_back().cloned())
                .ok_or_else(|| ServeError::ServableNotFound(ServableRequest::Latest(name.to_string()))),
            VersionChoice::Specific(v) => model
                .and_then(|m| m.servables.get(v).cloned())
                .ok_or_else(|| ServeError::ServableNotFound(ServableRequest::Specific(name.to_string(), *v))),
            // No labels are configured in this form of the repository, so
            // every label is unknown.
            VersionChoice::Label(label) => Err(ServeError::UnknownVersionLabel(label.clone())),
        }
    }

    /// The status of every known version of `name` (newest first), or of one
    /// version.
    ///
    /// # Errors
    /// `NOT_FOUND` with TensorFlow Serving's texts.
    pub fn status(&self, name: &str, version: Option<i64>) -> Result<Vec<VersionStatus>, ServeError> {
        let model = self
            .models
            .get(name)
            .filter(|m| !m.versions.is_empty())
            .ok_or_else(|| ServeError::NoVersionsOfModel(name.to_string()))?;
        match version {
            None => Ok(model.versions.values().rev().cloned().collect()),
            Some(v) => model
                .versions
                .get(&v)
                .map(|s| vec![s.clone()])
                .ok_or_else(|| ServeError::NoSuchVersion { model: name.to_string(), version: v }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_dirs_are_numeric_children_only() {
        let dir = std::env::temp_dir().join(format!("ferroserve-versions-{}", std::process::id()));
        for d in ["1", "0007", "tmp-3", "-2", "12abc"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("9"), b"a file, not a version").unwrap();
        let versions: Vec<i64> = version_dirs(&dir).unwrap().into_keys().collect();
        assert_eq!(versions, vec![1, 7]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_and_empty_base_paths_are_explained() {
        let reg = KernelRegistry::with_all_ops();
        let missing = ModelConfig { name: "m".into(), base_path: PathBuf::from("/nonexistent/ferroserve/m") };
        let err = ModelRepository::load(&[missing], &reg).unwrap_err().to_string();
        assert!(err.starts_with("Could not find base path /nonexistent/ferroserve/m for servable m"), "{err}");
        let dir = std::env::temp_dir().join(format!("ferroserve-empty-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("not-a-version")).unwrap();
        let empty = ModelConfig { name: "m".into(), base_path: dir.clone() };
        let err = ModelRepository::load(&[empty], &reg).unwrap_err().to_string();
        assert!(err.contains("Did you forget to name your leaf directory as a number"), "{err}");
        std::fs::create_dir_all(dir.join("3")).unwrap();
        let err = ModelRepository::load(&[ModelConfig { name: "m".into(), base_path: dir.clone() }], &reg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no model.onnx"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Models on disk and their versions, in TensorFlow Serving's layout
//! (`<base_path>/<numeric version>/model.onnx`), and their lifecycle.
//!
//! The repository resolves a request's (name, version or label) to a loaded
//! [`Servable`] and reports each version's state. A reconcile pass (at
//! start-up, on every file-system poll, and on a config reload) compares
//! what is on disk with each model's version policy, loads the new aspired
//! versions first, and only then unloads the versions they replace, so a
//! model never stops serving because of an update, and a version that fails
//! to load never takes down the one being served. Unloading drops the
//! repository's reference; requests in flight hold their own, so they
//! finish on the version they started with.
//!
//! Reconciles run on blocking threads and are serialised by one lock;
//! request-time lookups take short read locks and never wait for a load.

mod policy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::error::{ServableRequest, ServeError};
use crate::kernels::KernelRegistry;
use crate::metrics::Metrics;
use crate::savedmodel::meta::{SAVED_MODEL_PB, SAVED_MODEL_PBTXT};
use crate::servable::{LoadError, Servable};

pub use policy::{ONNX_FILE, VersionPolicy, VersionSource, scan};

/// One model to serve, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    pub base_path: PathBuf,
    pub policy: VersionPolicy,
    /// Version labels (`stable`, `canary`) and the versions they name.
    pub labels: BTreeMap<String, i64>,
    /// `tensorflow` or `onnx`; either serves any format (the format is
    /// detected from the version directory), but a reload may not change it.
    pub platform: String,
}

impl ModelConfig {
    /// A model served with the default policy (the latest version) and no
    /// labels.
    pub fn new(name: impl Into<String>, base_path: impl Into<PathBuf>) -> ModelConfig {
        ModelConfig {
            name: name.into(),
            base_path: base_path.into(),
            policy: VersionPolicy::default(),
            labels: BTreeMap::new(),
            platform: "tensorflow".to_string(),
        }
    }
}

/// How the repository loads and labels versions.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryOptions {
    /// Let a new label name a version that is not available yet.
    pub allow_labels_for_unavailable: bool,
    /// Load attempts after the first failed one.
    pub max_load_retries: u32,
    /// Pause between load attempts.
    pub load_retry_interval: Duration,
    /// The tags of the MetaGraphDef a SavedModel is served from
    /// (`--saved_model_tags`).
    pub saved_model_tags: Vec<String>,
}

impl Default for RepositoryOptions {
    fn default() -> Self {
        RepositoryOptions {
            allow_labels_for_unavailable: false,
            max_load_retries: 0,
            load_retry_interval: Duration::ZERO,
            saved_model_tags: vec!["serve".to_string()],
        }
    }
}

/// Replays warmup requests against a loaded version before it becomes
/// available. The services implement it; the repository only calls it.
pub trait VersionWarmup: Send + Sync + std::fmt::Debug {
    /// Warms `servable`, loaded from `version_dir`; returns how many
    /// requests ran.
    ///
    /// # Errors
    /// With the message that fails the load.
    fn warm_up(&self, servable: &Arc<Servable>, version_dir: &Path) -> Result<usize, String>;
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

/// A version's state and, for a version that failed to load, why.
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

/// Why models could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("Could not find base path {path} for servable {model}: {source}")]
    BasePath { model: String, path: String, source: std::io::Error },
    #[error(
        "No versions of servable {model} found under base path {path}. Did you forget to name your leaf directory as a number (eg. '/1/')?"
    )]
    NoVersions { model: String, path: String },
    /// TensorFlow Serving's start-up failure text.
    #[error("{} servable(s) did not become available: {{{}}}", .0.len(), .0.iter().map(|(m, v, e)| format!("{{name: {m} version: {v}}} due to error: {e}")).collect::<Vec<_>>().join(", "))]
    NotAvailable(Vec<(String, i64, String)>),
    #[error(transparent)]
    Label(ServeError),
}

/// A failed version's files, to retry it when they change.
type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

#[derive(Debug)]
struct VersionRecord {
    status: VersionStatus,
    /// Set for a version that failed to load.
    failed_files: Option<Fingerprint>,
    /// For a failure that a retry may fix (a missing or unreadable file):
    /// attempts so far and when the next poll may try again.
    retry: Option<(u32, Instant)>,
}

#[derive(Debug, Default)]
struct ModelState {
    /// Every version seen since the model was configured, unloaded and
    /// failed ones included (GetModelStatus shows the history).
    versions: BTreeMap<i64, VersionRecord>,
    /// The available versions.
    servables: BTreeMap<i64, Arc<Servable>>,
    labels: BTreeMap<String, i64>,
    /// The last scan error, logged once until it changes.
    scan_error: Option<String>,
}

#[derive(Debug)]
struct Model {
    config: RwLock<ModelConfig>,
    state: RwLock<ModelState>,
}

/// All served models.
#[derive(Debug)]
pub struct ModelRepository {
    registry: KernelRegistry,
    options: RepositoryOptions,
    models: RwLock<BTreeMap<String, Arc<Model>>>,
    /// Serialises reconciles and config changes.
    manager: Mutex<()>,
    /// Bumped on every state change; health follows it.
    changes: watch::Sender<u64>,
    /// Replays warmup requests, when enabled.
    warmup: Option<Arc<dyn VersionWarmup>>,
    /// Load and warmup figures (and the serving figures of the services
    /// that share it).
    metrics: Arc<Metrics>,
}

/// What a version directory holds.
enum ModelFormat {
    Onnx(PathBuf),
    SavedModel,
}

/// The model format of a version directory: `model.onnx`, or a SavedModel's
/// `saved_model.pb` (or `.pbtxt`).
fn model_format(source: &VersionSource) -> Result<ModelFormat, String> {
    // is_file() says false for a file we may not read; say why instead.
    std::fs::read_dir(&source.dir).map_err(|e| format!("cannot read {}: {e}", source.dir.display()))?;
    let onnx = source.dir.join(ONNX_FILE);
    if onnx.is_file() {
        return Ok(ModelFormat::Onnx(onnx));
    }
    if source.dir.join(SAVED_MODEL_PB).is_file() || source.dir.join(SAVED_MODEL_PBTXT).is_file() {
        return Ok(ModelFormat::SavedModel);
    }
    Err(format!("{} holds neither {ONNX_FILE} nor {SAVED_MODEL_PB}", source.dir.display()))
}

// Locks are never held across a panic-prone call, so a poisoned lock still
// guards consistent data: take it.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl ModelRepository {
    /// An empty repository; [`ModelRepository::apply_config`] adds models.
    pub fn new(registry: KernelRegistry, options: RepositoryOptions) -> ModelRepository {
        ModelRepository {
            registry,
            options,
            models: RwLock::new(BTreeMap::new()),
            manager: Mutex::new(()),
            changes: watch::channel(0).0,
            warmup: None,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The metrics this repository records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Warms every version with `warmup` before it becomes available.
    pub fn with_warmup(mut self, warmup: Arc<dyn VersionWarmup>) -> ModelRepository {
        self.warmup = Some(warmup);
        self
    }

    /// A repository serving `configs`, loaded once: the form tests and
    /// tools use.
    ///
    /// # Errors
    /// As [`ModelRepository::apply_config`].
    pub fn load(configs: &[ModelConfig], registry: KernelRegistry) -> Result<ModelRepository, RepositoryError> {
        let repo = ModelRepository::new(registry, RepositoryOptions::default());
        repo.apply_config(configs.to_vec())?;
        Ok(repo)
    }

    /// A receiver that sees a new value after every state change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn model(&self, name: &str) -> Option<Arc<Model>> {
        read(&self.models).get(name).cloned()
    }

    /// The names of all configured models.
    pub fn model_names(&self) -> Vec<String> {
        read(&self.models).keys().cloned().collect()
    }

    /// Each configured model and whether it has an available version.
    pub fn readiness(&self) -> Vec<(String, bool)> {
        read(&self.models).iter().map(|(name, m)| (name.clone(), !read(&m.state).servables.is_empty())).collect()
    }

    /// True while every configured model has an available version.
    pub fn all_available(&self) -> bool {
        self.readiness().iter().all(|(_, ready)| *ready)
    }

    /// Checks that `configs` may replace the served set: a model that stays
    /// keeps its platform.
    ///
    /// # Errors
    /// TensorFlow Serving's message for a platform change.
    pub fn check_reload(&self, configs: &[ModelConfig]) -> Result<(), ServeError> {
        let models = read(&self.models);
        for config in configs {
            if let Some(model) = models.get(&config.name) {
                let old = read(&model.config).platform.clone();
                if old != config.platform {
                    return Err(ServeError::InvalidArgument(format!(
                        "Illegal to change a model's platform. For model {} platform was {old} and new platform requested is {}",
                        config.name, config.platform
                    )));
                }
            }
        }
        Ok(())
    }

    /// Makes `configs` the served set: new models are added and loaded
    /// (this returns once each is available or has failed), models no
    /// longer listed are unloaded, and policies and labels of the others
    /// are updated.
    ///
    /// # Errors
    /// When a new model's base path is missing or has no versions, a new
    /// model has no available version after loading, or a label names a
    /// version that is not available.
    pub fn apply_config(&self, configs: Vec<ModelConfig>) -> Result<(), RepositoryError> {
        let _manager = self.manager.lock().unwrap_or_else(|e| e.into_inner());
        // New models must have a readable base path with a version in it
        // before anything changes.
        let is_new = |name: &str| !read(&self.models).contains_key(name);
        for config in configs.iter().filter(|c| is_new(&c.name)) {
            let path = config.base_path.display().to_string();
            let versions = scan(&config.base_path).map_err(|source| RepositoryError::BasePath {
                model: config.name.clone(),
                path: path.clone(),
                source,
            })?;
            if versions.is_empty() {
                return Err(RepositoryError::NoVersions { model: config.name.clone(), path });
            }
        }
        let mut added = Vec::new();
        {
            let mut models = write(&self.models);
            let keep: BTreeSet<&str> = configs.iter().map(|c| c.name.as_str()).collect();
            let removed: Vec<String> = models.keys().filter(|n| !keep.contains(n.as_str())).cloned().collect();
            for name in removed {
                // In-flight requests hold their servable; it is freed when
                // they finish.
                models.remove(&name);
                tracing::info!(model = %name, "model removed from the configuration; unloading");
            }
            for config in &configs {
                // Labels are installed once the versions they name are loaded.
                let mut without_labels = config.clone();
                match models.get(&config.name) {
                    Some(model) => {
                        without_labels.labels = read(&model.config).labels.clone();
                        *write(&model.config) = without_labels;
                    }
                    None => {
                        without_labels.labels.clear();
                        let model = Model { config: RwLock::new(without_labels), state: RwLock::default() };
                        models.insert(config.name.clone(), Arc::new(model));
                        added.push(config.name.clone());
                    }
                }
            }
        }
        let mut failures = Vec::new();
        for config in &configs {
            let Some(model) = self.model(&config.name) else { continue };
            // A new model waits for its retries (as TF Serving's start-up
            // does); a model already serving is retried by later polls.
            loop {
                self.reconcile(&config.name, &model);
                let next_retry = {
                    let state = read(&model.state);
                    if !added.contains(&config.name) || !state.servables.is_empty() {
                        None
                    } else {
                        state.versions.values().filter_map(|r| r.retry.map(|(_, at)| at)).min()
                    }
                };
                match next_retry {
                    Some(at) => std::thread::sleep(at.saturating_duration_since(Instant::now())),
                    None => break,
                }
            }
            let state = read(&model.state);
            if added.contains(&config.name) && state.servables.is_empty() {
                failures.extend(
                    state
                        .versions
                        .values()
                        .filter_map(|r| Some((config.name.clone(), r.status.version, r.status.error.clone()?))),
                );
            }
        }
        if !failures.is_empty() {
            // A model that cannot serve is not added: it would hold the
            // whole server's health at NOT_SERVING.
            let mut models = write(&self.models);
            for (name, _, _) in &failures {
                models.remove(name);
            }
            drop(models);
            self.changed();
            return Err(RepositoryError::NotAvailable(failures));
        }
        for config in &configs {
            if let Some(model) = self.model(&config.name) {
                self.set_labels(&config.name, &model, &config.labels).map_err(RepositoryError::Label)?;
            }
        }
        self.changed();
        Ok(())
    }

    /// Checks and installs a model's labels.
    fn set_labels(&self, name: &str, model: &Model, labels: &BTreeMap<String, i64>) -> Result<(), ServeError> {
        let mut state = write(&model.state);
        for (label, &version) in labels {
            let available = state.servables.contains_key(&version);
            let new_label = !state.labels.contains_key(label);
            let allowed = available || (self.options.allow_labels_for_unavailable && new_label);
            if !allowed {
                return Err(ServeError::FailedPrecondition(format!(
                    "Request to assign label to version {version} of model {name}, which is not currently available for inference"
                )));
            }
        }
        state.labels = labels.clone();
        write(&model.config).labels = labels.clone();
        Ok(())
    }

    /// One reconcile pass over every model: picks up new versions and
    /// unloads the ones no longer wanted.
    pub fn poll(&self) {
        let _manager = self.manager.lock().unwrap_or_else(|e| e.into_inner());
        let models: Vec<(String, Arc<Model>)> =
            read(&self.models).iter().map(|(n, m)| (n.clone(), m.clone())).collect();
        for (name, model) in models {
            self.reconcile(&name, &model);
        }
    }

    fn set_state(&self, model: &Model, version: i64, state: VersionState, error: Option<String>) {
        let mut s = write(&model.state);
        let record = s.versions.entry(version).or_insert_with(|| VersionRecord {
            status: VersionStatus { version, state, error: None },
            failed_files: None,
            retry: None,
        });
        record.status.state = state;
        record.status.error = error;
        drop(s);
        self.changed();
    }

    /// Brings one model in line with its policy and what is on disk.
    fn reconcile(&self, name: &str, model: &Model) {
        let config = read(&model.config).clone();
        let on_disk = match scan(&config.base_path) {
            Ok(v) => {
                write(&model.state).scan_error = None;
                v
            }
            Err(e) => {
                let text = format!("Could not find base path {} for servable {name}: {e}", config.base_path.display());
                let mut state = write(&model.state);
                if state.scan_error.as_deref() != Some(&text) {
                    tracing::error!("{text}");
                    state.scan_error = Some(text);
                }
                return;
            }
        };
        let versions: BTreeSet<i64> = on_disk.keys().copied().collect();
        let aspired = config.policy.aspired(&versions);

        // Load new aspired versions, the highest first.
        for &version in aspired.iter().rev() {
            let source = &on_disk[&version];
            let needs_load = {
                let state = read(&model.state);
                !state.servables.contains_key(&version)
                    && match state.versions.get(&version) {
                        None => true,
                        Some(r) => match &r.failed_files {
                            // A failed version is retried once its files
                            // change, or, for a missing or unreadable file,
                            // when its retry is due.
                            Some(files) => {
                                *files != policy::fingerprint(&source.dir)
                                    || r.retry.is_some_and(|(_, at)| Instant::now() >= at)
                            }
                            None => r.status.state == VersionState::End,
                        },
                    }
            };
            if needs_load {
                self.load_version(name, model, version, source);
            }
        }

        // Unload loaded versions the policy no longer wants, but only once
        // an aspired version is available (or none is wanted at all).
        let unload: Vec<i64> = {
            let state = read(&model.state);
            let aspired_available = state.servables.keys().any(|v| aspired.contains(v));
            if aspired_available || aspired.is_empty() {
                state.servables.keys().filter(|v| !aspired.contains(v)).copied().collect()
            } else {
                Vec::new()
            }
        };
        for version in unload {
            self.set_state(model, version, VersionState::Unloading, None);
            write(&model.state).servables.remove(&version);
            self.set_state(model, version, VersionState::End, None);
            tracing::info!(model = %name, version, "unloaded");
        }
    }

    fn load_version(&self, name: &str, model: &Model, version: i64, source: &VersionSource) {
        self.set_state(model, version, VersionState::Start, None);
        self.set_state(model, version, VersionState::Loading, None);
        let files = policy::fingerprint(&source.dir);
        // Attempts so far at these same files.
        let attempts = read(&model.state)
            .versions
            .get(&version)
            .filter(|r| r.failed_files.as_ref() == Some(&files))
            .and_then(|r| r.retry.map(|(n, _)| n))
            .unwrap_or(0);
        // Only a missing or unreadable file can change between attempts; a
        // file that does not parse fails for good (until its files change).
        // Retries happen on later polls, so one failing version never holds
        // up the others.
        let started = Instant::now();
        let result = model_format(source).map_err(|e| (e, true)).and_then(|format| {
            let loaded = match format {
                ModelFormat::Onnx(file) => Servable::load_onnx(name, version, &file, &self.registry),
                ModelFormat::SavedModel => Servable::load_saved_model(
                    name,
                    version,
                    &source.dir,
                    &self.options.saved_model_tags,
                    &self.registry,
                ),
            };
            loaded.map_err(|e| {
                let retryable = matches!(&e, LoadError::Onnx { source: crate::onnx::OnnxError::Io { .. }, .. });
                (e.to_string(), retryable)
            })
        });
        let (result, retryable) = match result {
            Ok(servable) => (Ok(servable), false),
            Err((e, retryable)) => (Err(e), retryable && attempts < self.options.max_load_retries),
        };
        let path = source.dir.display().to_string();
        self.metrics.record_load(&path, result.is_ok(), started.elapsed());
        let result = result.map(Arc::new).and_then(|servable| match &self.warmup {
            None => Ok(servable),
            Some(warmup) => {
                let started = Instant::now();
                let ran = warmup.warm_up(&servable, &source.dir);
                if ran != Ok(0) {
                    self.metrics.record_warmup(&path, ran.is_ok(), started.elapsed());
                }
                if let Ok(n) = ran
                    && n > 0
                {
                    tracing::info!(model = %name, version, requests = n, "warmup done");
                }
                ran.map(|_| servable)
            }
        });
        match result {
            Ok(servable) => {
                write(&model.state).servables.insert(version, servable);
                self.set_state(model, version, VersionState::Available, None);
                tracing::info!(model = %name, version, path = %source.dir.display(), "version available");
            }
            Err(e) => {
                if retryable {
                    tracing::warn!(model = %name, version, attempt = attempts + 1, "load failed, will retry: {e}");
                } else {
                    tracing::error!(model = %name, version, "version failed to load: {e}");
                }
                self.set_state(model, version, VersionState::End, Some(e));
                if let Some(r) = write(&model.state).versions.get_mut(&version) {
                    r.failed_files = Some(files);
                    r.retry = retryable.then(|| (attempts + 1, Instant::now() + self.options.load_retry_interval));
                }
            }
        }
    }

    /// The servable a request asks for.
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown model or version, `INVALID_ARGUMENT` for an
    /// unknown label, with TensorFlow Serving's texts.
    pub fn resolve(&self, name: &str, choice: &VersionChoice) -> Result<Arc<Servable>, ServeError> {
        let model = self.model(name);
        let state = model.as_ref().map(|m| read(&m.state));
        match choice {
            VersionChoice::Latest => state
                .and_then(|s| s.servables.values().next_back().cloned())
                .ok_or_else(|| ServeError::ServableNotFound(ServableRequest::Latest(name.to_string()))),
            VersionChoice::Specific(v) => state
                .and_then(|s| s.servables.get(v).cloned())
                .ok_or_else(|| ServeError::ServableNotFound(ServableRequest::Specific(name.to_string(), *v))),
            VersionChoice::Label(label) => {
                let Some(state) = state else {
                    return Err(ServeError::UnknownVersionLabel(label.clone()));
                };
                let version = *state.labels.get(label).ok_or_else(|| ServeError::UnknownVersionLabel(label.clone()))?;
                state
                    .servables
                    .get(&version)
                    .cloned()
                    .ok_or_else(|| ServeError::ServableNotFound(ServableRequest::Specific(name.to_string(), version)))
            }
        }
    }

    /// The status of every known version of `name` (newest first), or of one
    /// version.
    ///
    /// # Errors
    /// `NOT_FOUND` with TensorFlow Serving's texts.
    pub fn status(&self, name: &str, version: Option<i64>) -> Result<Vec<VersionStatus>, ServeError> {
        let model = self.model(name).ok_or_else(|| ServeError::NoVersionsOfModel(name.to_string()))?;
        let state = read(&model.state);
        if state.versions.is_empty() {
            return Err(ServeError::NoVersionsOfModel(name.to_string()));
        }
        match version {
            None => Ok(state.versions.values().rev().map(|r| r.status.clone()).collect()),
            Some(v) => state
                .versions
                .get(&v)
                .map(|r| vec![r.status.clone()])
                .ok_or_else(|| ServeError::NoSuchVersion { model: name.to_string(), version: v }),
        }
    }
}

/// Runs a reconcile pass every `interval`, on a blocking thread, for as
/// long as the task lives.
pub async fn poll_every(repository: Arc<ModelRepository>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let repo = repository.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || repo.poll()).await {
            tracing::error!("the version poller stopped: {e}");
        }
    }
}

/// True when `path` names an object store ferroserve cannot read.
pub fn is_remote(path: &Path) -> bool {
    let s = path.to_string_lossy();
    ["gs://", "s3://", "hdfs://", "http://", "https://", "az://", "abfs://"].iter().any(|p| s.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_base_paths_are_explained() {
        let missing = ModelConfig::new("m", "/nonexistent/ferroserve/m");
        let err = ModelRepository::load(&[missing], KernelRegistry::with_all_ops()).unwrap_err().to_string();
        assert!(err.starts_with("Could not find base path /nonexistent/ferroserve/m for servable m"), "{err}");
        let dir = std::env::temp_dir().join(format!("ferroserve-empty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("not-a-version")).unwrap();
        let err = ModelRepository::load(&[ModelConfig::new("m", &dir)], KernelRegistry::with_all_ops())
            .unwrap_err()
            .to_string();
        assert!(err.contains("Did you forget to name your leaf directory as a number"), "{err}");
        std::fs::create_dir_all(dir.join("3")).unwrap();
        let err = ModelRepository::load(&[ModelConfig::new("m", &dir)], KernelRegistry::with_all_ops())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("1 servable(s) did not become available: {{name: m version: 3} due to error:"),
            "{err}"
        );
        assert!(err.contains("holds neither model.onnx nor saved_model.pb"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn remote_paths_are_recognised() {
        assert!(is_remote(Path::new("gs://bucket/m")));
        assert!(is_remote(Path::new("s3://bucket/m")));
        assert!(!is_remote(Path::new("/models/m")));
    }
}

//! `tensorflow.serving.ModelService`: GetModelStatus and
//! HandleReloadConfigRequest.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::ServingState;
use crate::error::ServeError;
use crate::proto::tensorflow::serving::model_service_server::ModelService;
use crate::proto::tensorflow::serving::{
    GetModelStatusRequest, GetModelStatusResponse, ModelVersionStatus, ReloadConfigRequest, ReloadConfigResponse,
    StatusProto, model_spec, model_version_status,
};
use crate::repository::VersionState;

/// Serves `tensorflow.serving.ModelService`.
#[derive(Debug, Clone)]
pub struct ModelApi {
    state: Arc<ServingState>,
}

fn wire_state(state: VersionState) -> model_version_status::State {
    match state {
        VersionState::Start => model_version_status::State::Start,
        VersionState::Loading => model_version_status::State::Loading,
        VersionState::Available => model_version_status::State::Available,
        VersionState::Unloading => model_version_status::State::Unloading,
        VersionState::End => model_version_status::State::End,
    }
}

impl ModelApi {
    /// The service over shared serving state.
    pub fn new(state: Arc<ServingState>) -> ModelApi {
        ModelApi { state }
    }

    fn status(&self, request: GetModelStatusRequest) -> Result<GetModelStatusResponse, ServeError> {
        let spec = request.model_spec.ok_or(ServeError::MissingModelSpec)?;
        if spec.name.is_empty() {
            return Err(ServeError::EmptyModelName);
        }
        // As TensorFlow Serving: a version label is ignored and every
        // version is listed.
        let version = match spec.version_choice {
            Some(model_spec::VersionChoice::Version(v)) => Some(v),
            _ => None,
        };
        let versions = self.state.repository.status(&spec.name, version)?;
        Ok(GetModelStatusResponse {
            model_version_status: versions
                .into_iter()
                .map(|v| ModelVersionStatus {
                    version: v.version,
                    state: wire_state(v.state) as i32,
                    status: Some(match v.error {
                        None => StatusProto::default(),
                        Some(message) => StatusProto {
                            error_code: crate::proto::tensorflow::error::Code::Unknown as i32,
                            error_message: message,
                        },
                    }),
                })
                .collect(),
        })
    }
}

impl ModelApi {
    /// Replaces the served models with the request's list; returns once the
    /// newly added models are available (or failed). An invalid list is
    /// refused before anything changes.
    async fn reload(&self, request: ReloadConfigRequest) -> Result<ReloadConfigResponse, ServeError> {
        let config =
            request.config.ok_or_else(|| ServeError::InvalidArgument("ReloadConfigRequest has no config".into()))?;
        let models = crate::config::model_configs(&config).map_err(ServeError::InvalidArgument)?;
        self.state.repository.check_reload(&models)?;
        let repository = self.state.repository.clone();
        tokio::task::spawn_blocking(move || repository.apply_config(models))
            .await
            .map_err(|e| ServeError::Internal(format!("the reload stopped: {e}")))??;
        tracing::info!("model config reloaded");
        Ok(ReloadConfigResponse { status: Some(StatusProto::default()), metric: Vec::new() })
    }
}

#[tonic::async_trait]
impl ModelService for ModelApi {
    async fn get_model_status(
        &self,
        request: Request<GetModelStatusRequest>,
    ) -> Result<Response<GetModelStatusResponse>, Status> {
        self.status(request.into_inner()).map(Response::new).map_err(Status::from)
    }

    async fn handle_reload_config_request(
        &self,
        request: Request<ReloadConfigRequest>,
    ) -> Result<Response<ReloadConfigResponse>, Status> {
        self.reload(request.into_inner()).await.map(Response::new).map_err(Status::from)
    }
}

//! `cairnpb.Plugins`: install, remove and list the plugin registry. Installs
//! are checked here first (size, compile, world) so that a bad component is
//! refused before it reaches the log; apply checks again, deterministically.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::Core;
use crate::apply::Applied;
use crate::error::Error;
use crate::proto::cairnpb::plugins_server::Plugins;
use crate::proto::cairnpb::raft_request::Request as Proposal;
use crate::proto::cairnpb::{
    PluginInstallRequest, PluginInstallResponse, PluginListRequest, PluginListResponse, PluginRemoveRequest, PluginRemoveResponse,
};

/// Room for the binding's other fields around the component's bytes.
const BINDING_OVERHEAD_BYTES: usize = 2 << 20;

pub struct PluginService {
    core: Arc<Core>,
    max_plugin_bytes: usize,
}

impl PluginService {
    pub fn new(core: Arc<Core>, max_plugin_bytes: usize) -> Self {
        PluginService { core, max_plugin_bytes }
    }
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!("cairn: unexpected apply result for {what}"))
}

#[tonic::async_trait]
impl Plugins for PluginService {
    async fn install(&self, request: Request<PluginInstallRequest>) -> Result<Response<PluginInstallResponse>, Status> {
        let binding = request
            .into_inner()
            .plugin
            .ok_or_else(|| Error::PluginInvalid("the request has no plugin".into()))?;
        let plugins = self.core.plugins.clone();
        let max = self.max_plugin_bytes;
        // Compiling takes a while: keep it off the async workers.
        let binding = tokio::task::spawn_blocking(move || plugins.check_install(&binding, max).map(|()| binding))
            .await
            .map_err(|e| Status::internal(format!("cairn: plugin check failed: {e}")))??;
        let limit = self.max_plugin_bytes.saturating_add(BINDING_OVERHEAD_BYTES);
        match self.core.propose_within(Proposal::PluginInstall(binding), limit).await? {
            Applied::PluginInstall(info) => Ok(Response::new(PluginInstallResponse {
                header: Some(self.core.header(self.core.store.current_revision())),
                plugin: Some(info),
            })),
            _ => Err(unexpected("plugin install")),
        }
    }

    async fn remove(&self, request: Request<PluginRemoveRequest>) -> Result<Response<PluginRemoveResponse>, Status> {
        let r = request.into_inner();
        match self.core.propose(Proposal::PluginRemove(r)).await? {
            Applied::PluginRemove => Ok(Response::new(PluginRemoveResponse {
                header: Some(self.core.header(self.core.store.current_revision())),
            })),
            _ => Err(unexpected("plugin remove")),
        }
    }

    async fn list(&self, _request: Request<PluginListRequest>) -> Result<Response<PluginListResponse>, Status> {
        Ok(Response::new(PluginListResponse {
            header: Some(self.core.header(self.core.store.current_revision())),
            plugins: self.core.plugins.list(),
        }))
    }
}

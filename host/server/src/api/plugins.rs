//! `cairnpb.Plugins`: install, remove and list the plugin registry. Installs
//! are checked here first (size, compile, world) so that a bad component is
//! refused before it reaches the log; apply checks again, deterministically.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::member::{self, Member, PluginRemoved};
use crate::proto::cairnpb::plugins_server::Plugins;
use crate::proto::cairnpb::raft_request::Request as Proposal;
use crate::proto::cairnpb::{
    PluginInfo, PluginInstallRequest, PluginInstallResponse, PluginListRequest, PluginListResponse, PluginRemoveRequest,
    PluginRemoveResponse,
};

pub struct PluginService {
    member: Arc<Member>,
}

impl PluginService {
    pub fn new(member: Arc<Member>) -> Self {
        PluginService { member }
    }
}

#[tonic::async_trait]
impl Plugins for PluginService {
    async fn install(&self, request: Request<PluginInstallRequest>) -> Result<Response<PluginInstallResponse>, Status> {
        let caller = self.member.auth().authorize_request(&request)?;
        self.member.auth().check_admin(&caller)?;
        let binding = request
            .into_inner()
            .plugin
            .ok_or_else(|| Error::PluginInvalid("the request has no plugin".into()))?;
        let plugins = self.member.plugins().clone();
        let limits = *self.member.limits();
        // Compiling takes a while: keep it off the async workers.
        let binding = member::run_blocking(move || plugins.check_install(&binding, limits.max_plugin_bytes).map(|()| binding)).await?;
        let info: PluginInfo = self
            .member
            .propose_within(&caller, Proposal::PluginInstall(binding), limits.max_plugin_proposal_bytes())
            .await?;
        Ok(Response::new(PluginInstallResponse {
            header: Some(self.member.current_header()),
            plugin: Some(info),
        }))
    }

    async fn remove(&self, request: Request<PluginRemoveRequest>) -> Result<Response<PluginRemoveResponse>, Status> {
        let caller = self.member.auth().authorize_request(&request)?;
        self.member.auth().check_admin(&caller)?;
        let r = request.into_inner();
        let PluginRemoved = self.member.propose_as(&caller, Proposal::PluginRemove(r)).await?;
        Ok(Response::new(PluginRemoveResponse {
            header: Some(self.member.current_header()),
        }))
    }

    async fn list(&self, _request: Request<PluginListRequest>) -> Result<Response<PluginListResponse>, Status> {
        Ok(Response::new(PluginListResponse {
            header: Some(self.member.current_header()),
            plugins: self.member.plugins().list(),
        }))
    }
}

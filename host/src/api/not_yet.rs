//! Services whose RPCs are not built yet. Each answers gRPC `Unimplemented`
//! with a message naming the RPC, rather than the anonymous status a client
//! gets for an unknown service.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::proto::{etcdserverpb, v3electionpb, v3lockpb};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn not_yet<T>(rpc: &'static str) -> Result<T, Status> {
    Err(Error::Unimplemented(rpc).into())
}

pub struct WatchService;

#[tonic::async_trait]
impl etcdserverpb::watch_server::Watch for WatchService {
    type WatchStream = BoxStream<etcdserverpb::WatchResponse>;

    async fn watch(&self, _: Request<Streaming<etcdserverpb::WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        not_yet("Watch.Watch")
    }
}

pub struct LeaseService;

#[tonic::async_trait]
impl etcdserverpb::lease_server::Lease for LeaseService {
    async fn lease_grant(&self, _: Request<etcdserverpb::LeaseGrantRequest>) -> Result<Response<etcdserverpb::LeaseGrantResponse>, Status> {
        not_yet("Lease.LeaseGrant")
    }

    async fn lease_revoke(
        &self,
        _: Request<etcdserverpb::LeaseRevokeRequest>,
    ) -> Result<Response<etcdserverpb::LeaseRevokeResponse>, Status> {
        not_yet("Lease.LeaseRevoke")
    }

    type LeaseKeepAliveStream = BoxStream<etcdserverpb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        _: Request<Streaming<etcdserverpb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        not_yet("Lease.LeaseKeepAlive")
    }

    async fn lease_time_to_live(
        &self,
        _: Request<etcdserverpb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<etcdserverpb::LeaseTimeToLiveResponse>, Status> {
        not_yet("Lease.LeaseTimeToLive")
    }

    async fn lease_leases(
        &self,
        _: Request<etcdserverpb::LeaseLeasesRequest>,
    ) -> Result<Response<etcdserverpb::LeaseLeasesResponse>, Status> {
        not_yet("Lease.LeaseLeases")
    }
}

pub struct AuthService;

#[tonic::async_trait]
impl etcdserverpb::auth_server::Auth for AuthService {
    async fn auth_enable(&self, _: Request<etcdserverpb::AuthEnableRequest>) -> Result<Response<etcdserverpb::AuthEnableResponse>, Status> {
        not_yet("Auth.AuthEnable")
    }

    async fn auth_disable(
        &self,
        _: Request<etcdserverpb::AuthDisableRequest>,
    ) -> Result<Response<etcdserverpb::AuthDisableResponse>, Status> {
        not_yet("Auth.AuthDisable")
    }

    async fn authenticate(
        &self,
        _: Request<etcdserverpb::AuthenticateRequest>,
    ) -> Result<Response<etcdserverpb::AuthenticateResponse>, Status> {
        not_yet("Auth.Authenticate")
    }

    async fn user_add(&self, _: Request<etcdserverpb::AuthUserAddRequest>) -> Result<Response<etcdserverpb::AuthUserAddResponse>, Status> {
        not_yet("Auth.UserAdd")
    }

    async fn user_get(&self, _: Request<etcdserverpb::AuthUserGetRequest>) -> Result<Response<etcdserverpb::AuthUserGetResponse>, Status> {
        not_yet("Auth.UserGet")
    }

    async fn user_list(
        &self,
        _: Request<etcdserverpb::AuthUserListRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserListResponse>, Status> {
        not_yet("Auth.UserList")
    }

    async fn user_delete(
        &self,
        _: Request<etcdserverpb::AuthUserDeleteRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserDeleteResponse>, Status> {
        not_yet("Auth.UserDelete")
    }

    async fn user_change_password(
        &self,
        _: Request<etcdserverpb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserChangePasswordResponse>, Status> {
        not_yet("Auth.UserChangePassword")
    }

    async fn user_grant_role(
        &self,
        _: Request<etcdserverpb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserGrantRoleResponse>, Status> {
        not_yet("Auth.UserGrantRole")
    }

    async fn user_revoke_role(
        &self,
        _: Request<etcdserverpb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<etcdserverpb::AuthUserRevokeRoleResponse>, Status> {
        not_yet("Auth.UserRevokeRole")
    }

    async fn role_add(&self, _: Request<etcdserverpb::AuthRoleAddRequest>) -> Result<Response<etcdserverpb::AuthRoleAddResponse>, Status> {
        not_yet("Auth.RoleAdd")
    }

    async fn role_get(&self, _: Request<etcdserverpb::AuthRoleGetRequest>) -> Result<Response<etcdserverpb::AuthRoleGetResponse>, Status> {
        not_yet("Auth.RoleGet")
    }

    async fn role_list(
        &self,
        _: Request<etcdserverpb::AuthRoleListRequest>,
    ) -> Result<Response<etcdserverpb::AuthRoleListResponse>, Status> {
        not_yet("Auth.RoleList")
    }

    async fn role_delete(
        &self,
        _: Request<etcdserverpb::AuthRoleDeleteRequest>,
    ) -> Result<Response<etcdserverpb::AuthRoleDeleteResponse>, Status> {
        not_yet("Auth.RoleDelete")
    }

    async fn role_grant_permission(
        &self,
        _: Request<etcdserverpb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<etcdserverpb::AuthRoleGrantPermissionResponse>, Status> {
        not_yet("Auth.RoleGrantPermission")
    }

    async fn role_revoke_permission(
        &self,
        _: Request<etcdserverpb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<etcdserverpb::AuthRoleRevokePermissionResponse>, Status> {
        not_yet("Auth.RoleRevokePermission")
    }
}

pub struct LockService;

#[tonic::async_trait]
impl v3lockpb::lock_server::Lock for LockService {
    async fn lock(&self, _: Request<v3lockpb::LockRequest>) -> Result<Response<v3lockpb::LockResponse>, Status> {
        not_yet("Lock.Lock")
    }

    async fn unlock(&self, _: Request<v3lockpb::UnlockRequest>) -> Result<Response<v3lockpb::UnlockResponse>, Status> {
        not_yet("Lock.Unlock")
    }
}

pub struct ElectionService;

#[tonic::async_trait]
impl v3electionpb::election_server::Election for ElectionService {
    async fn campaign(&self, _: Request<v3electionpb::CampaignRequest>) -> Result<Response<v3electionpb::CampaignResponse>, Status> {
        not_yet("Election.Campaign")
    }

    async fn proclaim(&self, _: Request<v3electionpb::ProclaimRequest>) -> Result<Response<v3electionpb::ProclaimResponse>, Status> {
        not_yet("Election.Proclaim")
    }

    async fn leader(&self, _: Request<v3electionpb::LeaderRequest>) -> Result<Response<v3electionpb::LeaderResponse>, Status> {
        not_yet("Election.Leader")
    }

    type ObserveStream = BoxStream<v3electionpb::LeaderResponse>;

    async fn observe(&self, _: Request<v3electionpb::LeaderRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        not_yet("Election.Observe")
    }

    async fn resign(&self, _: Request<v3electionpb::ResignRequest>) -> Result<Response<v3electionpb::ResignResponse>, Status> {
        not_yet("Election.Resign")
    }
}

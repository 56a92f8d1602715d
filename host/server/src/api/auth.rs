//! Services whose RPCs are not built yet. Each answers gRPC `Unimplemented`
//! with a message naming the RPC, rather than the anonymous status a client
//! gets for an unknown service.

use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::proto::etcdserverpb;

fn not_yet<T>(rpc: &'static str) -> Result<T, Status> {
    Err(Error::Unimplemented(rpc).into())
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

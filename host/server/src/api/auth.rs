//! `etcdserverpb.Auth`: users, roles and tokens. Every RPC but
//! Authenticate's password check goes through Raft, carrying its caller, so
//! apply decides permissions the same way on every member. Passwords are
//! hashed here, on the member the client talks to, before proposing: the
//! hash is random and slow, so the entry carries it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::AuthApplied;
use crate::error::{Error, Result};
use crate::member::{self, Member};
use crate::proto::authpb::{User, UserAddOptions};
use crate::proto::cairnpb::raft_request::Request as Proposal;
use crate::proto::cairnpb::{AuthPasswordChange, AuthenticateEntry};
use crate::proto::etcdserverpb::{self as pb, auth_server::Auth};

/// How often Authenticate checks the password again when the auth state
/// changed between the check and the apply.
const AUTHENTICATE_ATTEMPTS: usize = 3;

pub struct AuthService {
    member: Arc<Member>,
}

impl AuthService {
    pub fn new(member: Arc<Member>) -> Self {
        AuthService { member }
    }

    /// Proposes `proposal` as the request's caller and returns what apply
    /// answered.
    async fn run<T>(&self, request: &Request<T>, proposal: Proposal) -> Result<AuthApplied> {
        let caller = self.member.authorize(request).await?;
        self.member.propose_as(&caller, proposal).await
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.member.current_header())
    }

    async fn hash(&self, password: String) -> Result<Vec<u8>> {
        let auth = self.member.auth().clone();
        member::run_blocking(move || auth.hash_password(&password)).await
    }

    async fn log_in(&self, r: pb::AuthenticateRequest) -> Result<String> {
        let auth = self.member.auth().clone();
        for _ in 0..AUTHENTICATE_ATTEMPTS {
            let (check, name, password) = (auth.clone(), r.name.clone(), r.password.clone());
            let checked_revision = member::run_blocking(move || check.check_password(&name, &password)).await?;
            let simple_token = auth.tokens().new_simple_token(self.member.next_id());
            let entry = AuthenticateEntry {
                name: r.name.clone(),
                simple_token: simple_token.clone(),
                checked_revision,
            };
            // Nobody needs a permission to log in: the cluster proposes it.
            match self.member.propose(Proposal::Authenticate(entry)).await {
                Ok(AuthApplied::Authenticate { user, revision }) => return auth.tokens().issue(&user, revision, &simple_token),
                Ok(_) => return Err(Error::UnexpectedApplied("authenticate")),
                Err(Error::AuthOldRevision) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::AuthOldRevision)
    }
}

/// Takes the expected kind of answer out of an applied auth request.
macro_rules! expect {
    ($applied:expr, $pattern:pat => $value:expr, $what:literal) => {
        match $applied {
            $pattern => Ok($value),
            _ => Err(Error::UnexpectedApplied($what)),
        }
    };
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, request: Request<pb::AuthEnableRequest>) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let r = Proposal::AuthEnable(*request.get_ref());
        expect!(self.run(&request, r).await?, AuthApplied::Enable => (), "auth enable")?;
        Ok(Response::new(pb::AuthEnableResponse { header: self.header() }))
    }

    async fn auth_disable(&self, request: Request<pb::AuthDisableRequest>) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let r = Proposal::AuthDisable(*request.get_ref());
        expect!(self.run(&request, r).await?, AuthApplied::Disable => (), "auth disable")?;
        Ok(Response::new(pb::AuthDisableResponse { header: self.header() }))
    }

    /// Answered from this member's state behind a linearizable barrier, which
    /// sees every change committed before the call, as etcd's answer through
    /// Raft does; it needs no permission.
    async fn auth_status(&self, _: Request<pb::AuthStatusRequest>) -> Result<Response<pb::AuthStatusResponse>, Status> {
        self.member.read_barrier(false).await?;
        let auth = self.member.auth();
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.header(),
            enabled: auth.is_enabled(),
            auth_revision: auth.revision(),
        }))
    }

    async fn authenticate(&self, request: Request<pb::AuthenticateRequest>) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let token = self.log_in(request.into_inner()).await?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: self.header(),
            token,
        }))
    }

    async fn user_add(&self, request: Request<pb::AuthUserAddRequest>) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        // Refused before the slow hash when the caller may not do it anyway.
        let caller = self.member.authorize(&request).await?;
        self.member.auth().check_admin(&caller)?;
        let r = request.into_inner();
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        let password = if no_password || r.name.is_empty() {
            Vec::new()
        } else {
            self.hash(r.password).await?
        };
        let user = User {
            name: r.name.into_bytes(),
            password,
            roles: Vec::new(),
            options: Some(UserAddOptions { no_password }),
        };
        let applied: AuthApplied = self.member.propose_as(&caller, Proposal::AuthUserAdd(user)).await?;
        expect!(applied, AuthApplied::UserAdd => (), "user add")?;
        Ok(Response::new(pb::AuthUserAddResponse { header: self.header() }))
    }

    async fn user_get(&self, request: Request<pb::AuthUserGetRequest>) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let r = Proposal::AuthUserGet(request.get_ref().clone());
        let roles = expect!(self.run(&request, r).await?, AuthApplied::UserGet(roles) => roles, "user get")?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn user_list(&self, request: Request<pb::AuthUserListRequest>) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let r = Proposal::AuthUserList(*request.get_ref());
        let users = expect!(self.run(&request, r).await?, AuthApplied::UserList(users) => users, "user list")?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.header(),
            users,
        }))
    }

    async fn user_delete(&self, request: Request<pb::AuthUserDeleteRequest>) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let r = Proposal::AuthUserDelete(request.get_ref().clone());
        expect!(self.run(&request, r).await?, AuthApplied::UserDelete => (), "user delete")?;
        Ok(Response::new(pb::AuthUserDeleteResponse { header: self.header() }))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let caller = self.member.authorize(&request).await?;
        self.member.auth().check_admin(&caller)?;
        let r = request.into_inner();
        let change = AuthPasswordChange {
            name: r.name,
            password_hash: self.hash(r.password).await?,
        };
        let applied: AuthApplied = self.member.propose_as(&caller, Proposal::AuthUserChangePassword(change)).await?;
        expect!(applied, AuthApplied::UserChangePassword => (), "user change password")?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse { header: self.header() }))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = Proposal::AuthUserGrantRole(request.get_ref().clone());
        expect!(self.run(&request, r).await?, AuthApplied::UserGrantRole => (), "user grant role")?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header: self.header() }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = Proposal::AuthUserRevokeRole(request.get_ref().clone());
        expect!(self.run(&request, r).await?, AuthApplied::UserRevokeRole => (), "user revoke role")?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header: self.header() }))
    }

    async fn role_add(&self, request: Request<pb::AuthRoleAddRequest>) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let r = Proposal::AuthRoleAdd(request.get_ref().clone());
        expect!(self.run(&request, r).await?, AuthApplied::RoleAdd => (), "role add")?;
        Ok(Response::new(pb::AuthRoleAddResponse { header: self.header() }))
    }

    async fn role_get(&self, request: Request<pb::AuthRoleGetRequest>) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let r = Proposal::AuthRoleGet(request.get_ref().clone());
        let perm = expect!(self.run(&request, r).await?, AuthApplied::RoleGet(perm) => perm, "role get")?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.header(),
            perm,
        }))
    }

    async fn role_list(&self, request: Request<pb::AuthRoleListRequest>) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let r = Proposal::AuthRoleList(*request.get_ref());
        let roles = expect!(self.run(&request, r).await?, AuthApplied::RoleList(roles) => roles, "role list")?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn role_delete(&self, request: Request<pb::AuthRoleDeleteRequest>) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let r = Proposal::AuthRoleDelete(request.get_ref().clone());
        expect!(self.run(&request, r).await?, AuthApplied::RoleDelete => (), "role delete")?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header: self.header() }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = Proposal::AuthRoleGrantPermission(request.get_ref().clone());
        expect!(self.run(&request, r).await?, AuthApplied::RoleGrantPermission => (), "role grant permission")?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse { header: self.header() }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = Proposal::AuthRoleRevokePermission(request.get_ref().clone());
        expect!(self.run(&request, r).await?, AuthApplied::RoleRevokePermission => (), "role revoke permission")?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse { header: self.header() }))
    }
}

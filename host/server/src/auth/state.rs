//! The replicated auth state (users, roles, the enabled flag, the auth
//! revision) and the deterministic changes apply makes to it, with etcd's
//! rules and errors. Records live in the meta column family under the
//! prefixes [`crate::storage::schema`] declares.

use std::collections::BTreeMap;

use prost::Message;
use rocksdb::{IteratorMode, WriteBatch};

use super::perm::{Interval, MergedPerms, Perm};
use crate::error::{Error, Result};
use crate::proto::authpb::{Permission, Role, User, UserAddOptions};
use crate::proto::cairnpb::raft_request::Request;
use crate::proto::cairnpb::Caller;
use crate::storage::schema::{META_AUTH_ENABLED, META_AUTH_REVISION, META_AUTH_ROLE_PREFIX, META_AUTH_USER_PREFIX};
use crate::storage::{Database, CF_META};

pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

/// What an applied auth request answers.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthApplied {
    Enable,
    Disable,
    /// A password check was replicated: `user` may now use the token the
    /// entry carried (simple tokens) or be issued one (JWT).
    Authenticate {
        user: String,
        revision: u64,
    },
    UserAdd,
    UserGet(Vec<String>),
    UserList(Vec<String>),
    UserDelete,
    UserChangePassword,
    UserGrantRole,
    UserRevokeRole,
    RoleAdd,
    RoleGet(Vec<Permission>),
    RoleList(Vec<String>),
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
}

/// Side effects of an applied change on this member's tokens.
#[derive(Debug, Default, PartialEq)]
pub struct TokenEffects {
    /// Auth was turned off: every token is void.
    pub clear_all: bool,
    /// These users' tokens are void (deleted, or their password changed).
    pub invalidate_users: Vec<String>,
    /// A simple token the entry made valid, for this user.
    pub register: Option<(String, String)>,
}

/// One member's copy of the auth state.
#[derive(Debug, Clone)]
pub struct AuthState {
    pub enabled: bool,
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> Self {
        // etcd's store starts at revision 1.
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

fn user_key(name: &str) -> Vec<u8> {
    [META_AUTH_USER_PREFIX, name.as_bytes()].concat()
}

fn role_key(name: &str) -> Vec<u8> {
    [META_AUTH_ROLE_PREFIX, name.as_bytes()].concat()
}

fn name_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT_ROLE)
}

impl AuthState {
    /// Reads the state from the meta column family.
    pub fn load(engine: &Database) -> Result<AuthState> {
        let mut state = AuthState {
            enabled: engine.get_meta(META_AUTH_ENABLED)?.is_some_and(|v| v.first() == Some(&1)),
            revision: engine.get_meta_u64(META_AUTH_REVISION)?.unwrap_or(1),
            ..Default::default()
        };
        let db = engine.db();
        for (prefix, is_user) in [(META_AUTH_USER_PREFIX, true), (META_AUTH_ROLE_PREFIX, false)] {
            let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
            for item in db.iterator_cf(engine.cf(CF_META), mode) {
                let (k, v) = item?;
                if !k.starts_with(prefix) {
                    break;
                }
                let name = name_of(&k[prefix.len()..]);
                if is_user {
                    state.users.insert(name, User::decode(&*v)?);
                } else {
                    state.roles.insert(name, Role::decode(&*v)?);
                }
            }
        }
        Ok(state)
    }

    /// The permissions `user` holds, or `None` when it is root (everything).
    pub fn merged_perms(&self, user: &User) -> Option<MergedPerms> {
        if has_root_role(user) {
            return None;
        }
        Some(MergedPerms::of(user.roles.iter().filter_map(|r| self.roles.get(r))))
    }

    /// etcd's `isOpPermitted`: `caller` may access `[key, range_end)`.
    pub fn check_range(&self, caller: &Caller, key: &[u8], range_end: &[u8], perm: Perm) -> Result<()> {
        let Some(perms) = self.permissions_of(caller)? else {
            return Ok(());
        };
        if perms.covers(&Interval::of(key, range_end), perm) {
            Ok(())
        } else {
            Err(Error::PermissionDenied)
        }
    }

    /// The caller's merged permissions, `None` when no check is needed
    /// (auth off, or a root user), after the user and revision checks every
    /// key check starts with.
    pub fn permissions_of(&self, caller: &Caller) -> Result<Option<MergedPerms>> {
        if !self.enabled {
            return Ok(None);
        }
        if caller.user.is_empty() || caller.auth_revision == 0 {
            return Err(Error::AuthUserEmpty);
        }
        if caller.auth_revision < self.revision {
            return Err(Error::AuthOldRevision);
        }
        let user = self.users.get(&caller.user).ok_or(Error::PermissionDenied)?;
        Ok(self.merged_perms(user))
    }

    /// etcd's `IsAdminPermitted`: the caller holds the root role.
    pub fn check_admin(&self, caller: &Caller) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if caller.user.is_empty() {
            return Err(Error::AuthUserEmpty);
        }
        let user = self.users.get(&caller.user).ok_or(Error::AuthUserNotFound)?;
        if !has_root_role(user) {
            return Err(Error::PermissionDenied);
        }
        Ok(())
    }

    /// Some user is known to have made the request.
    pub fn check_authenticated(&self, caller: &Caller) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if caller.user.is_empty() || caller.auth_revision == 0 {
            return Err(Error::AuthUserEmpty);
        }
        if caller.auth_revision < self.revision {
            return Err(Error::AuthOldRevision);
        }
        Ok(())
    }

    fn has_role(&self, user: &str, role: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.iter().any(|r| r == role))
    }
}

/// One applied change: the new state and the records to write for it.
pub struct Change {
    pub state: AuthState,
    pub batch: WriteBatch,
    pub applied: AuthApplied,
    pub tokens: TokenEffects,
}

/// Applies one auth entry to `before`, deterministically. `Err` is the
/// request's refusal, the same on every member.
/// `caller` `None` is the cluster itself, which needs no permission.
pub fn apply(engine: &Database, before: &AuthState, request: &Request, caller: Option<&Caller>) -> Result<Change> {
    let mut next = Applying {
        engine,
        state: before.clone(),
        batch: WriteBatch::default(),
        tokens: TokenEffects::default(),
        changed: false,
    };
    let applied = next.run(request, caller)?;
    if next.changed {
        next.state.revision += 1;
        next.batch
            .put_cf(engine.cf(CF_META), META_AUTH_REVISION, next.state.revision.to_be_bytes());
    }
    Ok(Change {
        state: next.state,
        batch: next.batch,
        applied,
        tokens: next.tokens,
    })
}

struct Applying<'e> {
    engine: &'e Database,
    state: AuthState,
    batch: WriteBatch,
    tokens: TokenEffects,
    /// Whether the change moves the auth revision.
    changed: bool,
}

/// Whether only a root user may make this auth request while auth is on:
/// all but logging in, and UserGet and RoleGet, which are also open to the
/// user they concern.
fn needs_admin(request: &Request) -> bool {
    !matches!(
        request,
        Request::Authenticate(_) | Request::AuthUserGet(_) | Request::AuthRoleGet(_)
    )
}

impl Applying<'_> {
    fn put_user(&mut self, user: User) {
        let name = name_of(&user.name);
        self.batch.put_cf(self.engine.cf(CF_META), user_key(&name), user.encode_to_vec());
        self.state.users.insert(name, user);
        self.changed = true;
    }

    fn put_role(&mut self, role: Role) {
        let name = name_of(&role.name);
        self.batch.put_cf(self.engine.cf(CF_META), role_key(&name), role.encode_to_vec());
        self.state.roles.insert(name, role);
        self.changed = true;
    }

    fn user(&self, name: &str) -> Result<User> {
        self.state.users.get(name).cloned().ok_or(Error::AuthUserNotFound)
    }

    fn role(&self, name: &str) -> Result<Role> {
        self.state.roles.get(name).cloned().ok_or(Error::AuthRoleNotFound)
    }

    fn run(&mut self, request: &Request, caller: Option<&Caller>) -> Result<AuthApplied> {
        // Checked against the state before the change, as etcd does.
        let admin = match caller {
            Some(c) => self.state.check_admin(c),
            None => Ok(()),
        };
        let admin = if needs_admin(request) {
            admin?;
            Ok(())
        } else {
            admin
        };
        let caller_name = caller.map_or("", |c| c.user.as_str());
        let engine = self.engine;
        let cf = engine.cf(CF_META);
        match request {
            Request::AuthEnable(_) => {
                if self.state.enabled {
                    return Ok(AuthApplied::Enable);
                }
                let root = self.state.users.get(ROOT_USER).ok_or(Error::AuthRootUserNotExist)?;
                if !has_root_role(root) {
                    return Err(Error::AuthRootRoleNotExist);
                }
                self.state.enabled = true;
                self.batch.put_cf(cf, META_AUTH_ENABLED, [1]);
                Ok(AuthApplied::Enable)
            }
            Request::AuthDisable(_) => {
                if !self.state.enabled {
                    return Ok(AuthApplied::Disable);
                }
                self.state.enabled = false;
                self.batch.put_cf(cf, META_AUTH_ENABLED, [0]);
                self.changed = true;
                self.tokens.clear_all = true;
                Ok(AuthApplied::Disable)
            }
            Request::Authenticate(a) => {
                if !self.state.enabled {
                    return Err(Error::AuthNotEnabled);
                }
                let user = self.state.users.get(&a.name).ok_or(Error::AuthFailed)?;
                if user.options.as_ref().is_some_and(|o| o.no_password) {
                    return Err(Error::AuthFailed);
                }
                // The password was checked at another revision: the user
                // may have changed since, so the proposer checks again.
                if a.checked_revision != self.state.revision {
                    return Err(Error::AuthOldRevision);
                }
                if !a.simple_token.is_empty() {
                    self.tokens.register = Some((a.simple_token.clone(), a.name.clone()));
                }
                Ok(AuthApplied::Authenticate {
                    user: a.name.clone(),
                    revision: self.state.revision,
                })
            }
            Request::AuthUserAdd(u) => {
                let name = name_of(&u.name);
                if name.is_empty() {
                    return Err(Error::AuthUserEmpty);
                }
                if self.state.users.contains_key(&name) {
                    return Err(Error::AuthUserAlreadyExist);
                }
                let no_password = u.options.as_ref().is_some_and(|o| o.no_password);
                self.put_user(User {
                    name: u.name.clone(),
                    password: if no_password { Vec::new() } else { u.password.clone() },
                    roles: Vec::new(),
                    options: Some(UserAddOptions { no_password }),
                });
                Ok(AuthApplied::UserAdd)
            }
            Request::AuthUserGet(r) => {
                if let Err(e) = admin {
                    if r.name != caller_name {
                        return Err(e);
                    }
                }
                Ok(AuthApplied::UserGet(self.user(&r.name)?.roles))
            }
            Request::AuthUserList(_) => Ok(AuthApplied::UserList(self.state.users.keys().cloned().collect())),
            Request::AuthUserDelete(r) => {
                if self.state.enabled && r.name == ROOT_USER {
                    return Err(Error::AuthInvalidMgmt);
                }
                self.user(&r.name)?;
                self.batch.delete_cf(cf, user_key(&r.name));
                self.state.users.remove(&r.name);
                self.changed = true;
                self.tokens.invalidate_users.push(r.name.clone());
                Ok(AuthApplied::UserDelete)
            }
            Request::AuthUserChangePassword(r) => {
                let mut user = self.user(&r.name)?;
                user.password = r.password_hash.clone();
                self.put_user(user);
                self.tokens.invalidate_users.push(r.name.clone());
                Ok(AuthApplied::UserChangePassword)
            }
            Request::AuthUserGrantRole(r) => {
                let mut user = self.user(&r.user)?;
                // The root role may be granted before it is created.
                if r.role != ROOT_ROLE {
                    self.role(&r.role)?;
                }
                match user.roles.binary_search(&r.role) {
                    Ok(_) => {}
                    Err(at) => {
                        user.roles.insert(at, r.role.clone());
                        self.put_user(user);
                    }
                }
                Ok(AuthApplied::UserGrantRole)
            }
            Request::AuthUserRevokeRole(r) => {
                if self.state.enabled && r.name == ROOT_USER && r.role == ROOT_ROLE {
                    return Err(Error::AuthInvalidMgmt);
                }
                let mut user = self.user(&r.name)?;
                let at = user.roles.iter().position(|x| *x == r.role).ok_or(Error::AuthRoleNotGranted)?;
                user.roles.remove(at);
                self.put_user(user);
                Ok(AuthApplied::UserRevokeRole)
            }
            Request::AuthRoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(Error::AuthRoleEmpty);
                }
                if self.state.roles.contains_key(&r.name) {
                    return Err(Error::AuthRoleAlreadyExist);
                }
                self.put_role(Role {
                    name: r.name.clone().into_bytes(),
                    key_permission: Vec::new(),
                });
                Ok(AuthApplied::RoleAdd)
            }
            Request::AuthRoleGet(r) => {
                if let Err(e) = admin {
                    if !self.state.has_role(caller_name, &r.role) {
                        return Err(e);
                    }
                }
                Ok(AuthApplied::RoleGet(self.role(&r.role)?.key_permission))
            }
            Request::AuthRoleList(_) => Ok(AuthApplied::RoleList(self.state.roles.keys().cloned().collect())),
            Request::AuthRoleDelete(r) => {
                if self.state.enabled && r.role == ROOT_ROLE {
                    return Err(Error::AuthInvalidMgmt);
                }
                self.role(&r.role)?;
                self.batch.delete_cf(cf, role_key(&r.role));
                self.state.roles.remove(&r.role);
                self.changed = true;
                let holders: Vec<User> = self.state.users.values().filter(|u| u.roles.contains(&r.role)).cloned().collect();
                for mut user in holders {
                    user.roles.retain(|x| *x != r.role);
                    self.put_user(user);
                }
                Ok(AuthApplied::RoleDelete)
            }
            Request::AuthRoleGrantPermission(r) => {
                let mut role = self.role(&r.name)?;
                let perm = r.perm.clone().ok_or(Error::AuthPermissionNotGiven)?;
                // Kept sorted by key; the same key and range end is updated.
                let at = role.key_permission.partition_point(|p| p.key < perm.key);
                let same = role
                    .key_permission
                    .get(at)
                    .is_some_and(|p| p.key == perm.key && p.range_end == perm.range_end);
                if same {
                    role.key_permission[at].perm_type = perm.perm_type;
                } else {
                    role.key_permission.insert(at, perm);
                }
                self.put_role(role);
                Ok(AuthApplied::RoleGrantPermission)
            }
            Request::AuthRoleRevokePermission(r) => {
                let mut role = self.role(&r.role)?;
                let at = role
                    .key_permission
                    .iter()
                    .position(|p| p.key == r.key && p.range_end == r.range_end)
                    .ok_or(Error::AuthPermissionNotGranted)?;
                role.key_permission.remove(at);
                self.put_role(role);
                Ok(AuthApplied::RoleRevokePermission)
            }
            _ => Err(Error::InvalidRequest("not an auth request".into())),
        }
    }
}

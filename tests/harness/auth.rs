//! Auth test helpers: users and roles set up with the real etcdctl, and raw
//! gRPC calls that carry a token of the test's choosing (one taken from
//! another member, one that has expired, one signed by another server's
//! key), answered as JSON outcomes that compare across implementations.

use std::time::Duration;

use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient, watch_request::RequestUnion, AlarmRequest, AlarmType,
    AuthenticateRequest, CompactionRequest, DefragmentRequest, HashKvRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, MemberListRequest, MoveLeaderRequest, PutRequest, RangeRequest, StatusRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::etcdctl::Output;

/// The root password every auth test uses.
pub const ROOT_PASSWORD: &str = "rootpw";
/// `--user` of the root user.
pub const ROOT: &str = "root:rootpw";

/// How long one raw call may take before the test fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A gRPC channel to `endpoint` (`http://host:port`).
pub async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_string())
        .unwrap_or_else(|e| panic!("bad endpoint {endpoint}: {e}"))
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {endpoint}: {e}"))
}

/// A request carrying `token` the way etcd's clients send it.
pub fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value: MetadataValue<_> = token
            .parse()
            .unwrap_or_else(|e| panic!("token {token:?} is not ASCII metadata: {e}"));
        request.metadata_mut().insert("token", value);
    }
    request
}

/// The JSON of a refusal: gRPC code and message, which etcd's clients match on.
pub fn status_json(status: &Status) -> Value {
    json!({ "code": format!("{:?}", status.code()), "message": status.message() })
}

/// `{"ok": <what>}` or the refusal.
pub fn outcome<T>(result: Result<T, Status>, ok: impl FnOnce(T) -> Value) -> Value {
    match result {
        Ok(v) => json!({ "ok": ok(v) }),
        Err(s) => json!({ "error": status_json(&s) }),
    }
}

/// A granted call's reduced outcome.
fn done<T>(_: T) -> Value {
    json!(true)
}

/// Logs in; the token, or the refusal.
pub async fn authenticate(endpoint: &str, name: &str, password: &str) -> Result<String, Status> {
    let mut auth = AuthClient::new(channel(endpoint).await);
    let resp = auth
        .authenticate(AuthenticateRequest {
            name: name.to_string(),
            password: password.to_string(),
        })
        .await?;
    Ok(resp.into_inner().token)
}

/// Logs in, panicking on a refusal.
pub async fn token_of(endpoint: &str, name: &str, password: &str) -> String {
    authenticate(endpoint, name, password)
        .await
        .unwrap_or_else(|s| panic!("{name} cannot log in at {endpoint}: {s:?}"))
}

/// A linearizable get of `key` with `token`: the values read, or the refusal.
pub async fn get(endpoint: &str, token: Option<&str>, key: &str) -> Value {
    let mut kv = KvClient::new(channel(endpoint).await);
    let request = RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    outcome(kv.range(with_token(request, token)).await, |r| {
        let r = r.into_inner();
        let values: Vec<String> = r.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).collect();
        json!(values)
    })
}

/// A put with `token`: ok, or the refusal.
pub async fn put(endpoint: &str, token: Option<&str>, key: &str, value: &str, lease: i64) -> Value {
    let mut kv = KvClient::new(channel(endpoint).await);
    let request = PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        lease,
        ..Default::default()
    };
    outcome(kv.put(with_token(request, token)).await, |_| json!(true))
}

/// What the first response of a new watch on `[key, range_end)` says.
/// etcd answers a refused create on the stream itself: created and at once
/// canceled, with the reason.
pub async fn watch_create(endpoint: &str, token: Option<&str>, key: &[u8], range_end: &[u8]) -> Value {
    let mut watch = WatchClient::new(channel(endpoint).await);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..Default::default()
        })),
    };
    // The request stream stays open while we read, as a client's does.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(create).await.expect("queue the watch create");
    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut responses = match watch.watch(with_token(requests, token)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return json!({ "error": status_json(&s) }),
    };
    let first: Result<Option<WatchResponse>, Status> = tokio::time::timeout(CALL_TIMEOUT, responses.message())
        .await
        .unwrap_or_else(|_| panic!("no answer to a watch create at {endpoint} within {CALL_TIMEOUT:?}"));
    drop(tx);
    match first {
        Ok(Some(r)) => json!({
            "created": r.created,
            "canceled": r.canceled,
            "cancel_reason": r.cancel_reason,
            // Refused creates carry etcd's invalid id -1; granted ones a real id.
            "refused_id": r.watch_id == -1,
        }),
        Ok(None) => json!({ "closed": true }),
        Err(s) => json!({ "error": status_json(&s) }),
    }
}

/// Grants a lease of `ttl` seconds with `token`: its id, or the refusal.
pub async fn lease_grant(endpoint: &str, token: Option<&str>, ttl: i64) -> Result<i64, Status> {
    let mut lease = LeaseClient::new(channel(endpoint).await);
    let r = lease.lease_grant(with_token(LeaseGrantRequest { ttl, id: 0 }, token)).await?;
    Ok(r.into_inner().id)
}

pub async fn lease_revoke(endpoint: &str, token: Option<&str>, id: i64) -> Value {
    let mut lease = LeaseClient::new(channel(endpoint).await);
    outcome(lease.lease_revoke(with_token(LeaseRevokeRequest { id }, token)).await, |_| {
        json!(true)
    })
}

/// One keep-alive round trip: the renewed TTL (`> 0`) or the refusal.
pub async fn lease_keep_alive_once(endpoint: &str, token: Option<&str>, id: i64) -> Value {
    let mut lease = LeaseClient::new(channel(endpoint).await);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(LeaseKeepAliveRequest { id }).await.expect("queue the keep-alive");
    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut responses = match lease.lease_keep_alive(with_token(requests, token)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return json!({ "error": status_json(&s) }),
    };
    let first = tokio::time::timeout(CALL_TIMEOUT, responses.message())
        .await
        .unwrap_or_else(|_| panic!("no answer to a keep-alive at {endpoint} within {CALL_TIMEOUT:?}"));
    drop(tx);
    match first {
        Ok(Some(r)) => json!({ "ok": { "renewed": r.ttl > 0 } }),
        Ok(None) => json!({ "closed": true }),
        Err(s) => json!({ "error": status_json(&s) }),
    }
}

/// TimeToLive of lease `id`, with its keys when `keys`.
pub async fn lease_time_to_live(endpoint: &str, token: Option<&str>, id: i64, keys: bool) -> Value {
    let mut lease = LeaseClient::new(channel(endpoint).await);
    outcome(
        lease
            .lease_time_to_live(with_token(LeaseTimeToLiveRequest { id, keys }, token))
            .await,
        |r| {
            let r = r.into_inner();
            let keys: Vec<String> = r.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
            json!({ "granted_ttl": r.granted_ttl, "keys": keys })
        },
    )
}

pub async fn lease_leases(endpoint: &str, token: Option<&str>) -> Value {
    let mut lease = LeaseClient::new(channel(endpoint).await);
    outcome(lease.lease_leases(with_token(LeaseLeasesRequest {}, token)).await, |r| {
        json!(r.into_inner().leases.len())
    })
}

/// The calls etcd 3.6 reserves for the root role or for a logged-in user,
/// each made with `token`: name -> outcome (bodies reduced to `true`).
pub async fn privileged_calls(endpoint: &str, token: Option<&str>) -> Value {
    let ch = channel(endpoint).await;
    let mut maintenance = MaintenanceClient::new(ch.clone());
    let mut cluster = ClusterClient::new(ch.clone());
    let mut kv = KvClient::new(ch);
    json!({
        "status": outcome(maintenance.status(with_token(StatusRequest {}, token)).await, done),
        "hash_kv": outcome(maintenance.hash_kv(with_token(HashKvRequest { revision: 0 }, token)).await, done),
        "defragment": outcome(maintenance.defragment(with_token(DefragmentRequest {}, token)).await, done),
        "alarm_deactivate": outcome(
            maintenance
                .alarm(with_token(
                    AlarmRequest {
                        action: AlarmAction::Deactivate as i32,
                        member_id: 0,
                        alarm: AlarmType::Nospace as i32,
                    },
                    token,
                ))
                .await,
            done,
        ),
        "move_leader": outcome(
            maintenance.move_leader(with_token(MoveLeaderRequest { target_id: 1 }, token)).await,
            done,
        ),
        "member_list": outcome(
            cluster.member_list(with_token(MemberListRequest {}, token)).await,
            done,
        ),
        "compact": outcome(
            kv.compact(with_token(CompactionRequest { revision: 1, physical: false }, token)).await,
            done,
        ),
        "lease_grant": outcome(
            LeaseClient::new(channel(endpoint).await)
                .lease_grant(with_token(LeaseGrantRequest { ttl: 60, id: 0 }, token))
                .await,
            done,
        ),
    })
}

/// Sets up, with etcdctl runner `ctl`, the users and roles the auth tests
/// share, then enables auth:
/// * `root` (password [`ROOT_PASSWORD`], role root);
/// * `alice` (`apw`), role `reader`: READ on prefix `foo/`, READWRITE on `key1`,
///   WRITE on prefix `wo/`, READWRITE on prefix `lk/` (for locks and elections);
/// * `bob` (`bpw`), no role at all.
///
/// Returns every step's output, for the caller to check or compare.
pub fn setup_users(mut ctl: impl FnMut(&str, &[&str]) -> Output) -> Vec<Output> {
    let steps: &[(&str, &[&str])] = &[
        (
            "add root",
            &["user", "add", "root", "--new-user-password=rootpw", "--interactive=false"],
        ),
        ("add reader", &["role", "add", "reader"]),
        (
            "grant read foo/",
            &["role", "grant-permission", "--prefix", "reader", "read", "foo/"],
        ),
        ("grant readwrite key1", &["role", "grant-permission", "reader", "readwrite", "key1"]),
        (
            "grant write wo/",
            &["role", "grant-permission", "reader", "write", "wo/", "--prefix"],
        ),
        (
            "grant readwrite lk/",
            &["role", "grant-permission", "reader", "readwrite", "lk/", "--prefix"],
        ),
        (
            "add alice",
            &["user", "add", "alice", "--new-user-password=apw", "--interactive=false"],
        ),
        ("grant reader to alice", &["user", "grant-role", "alice", "reader"]),
        ("add bob", &["user", "add", "bob", "--new-user-password=bpw", "--interactive=false"]),
        ("enable", &["auth", "enable"]),
    ];
    steps.iter().map(|(step, args)| ctl(step, args)).collect()
}

/// The server-side Lock RPC with `token`, on a lease of `lease` (0: the
/// server's own session lease); unlocks at once when granted.
pub async fn lock(endpoint: &str, token: Option<&str>, name: &str, lease: i64) -> Value {
    use cairn_proto::v3lockpb::{lock_client::LockClient, LockRequest, UnlockRequest};
    let mut lock = LockClient::new(channel(endpoint).await);
    let request = LockRequest {
        name: name.as_bytes().to_vec(),
        lease,
    };
    let key = match lock.lock(with_token(request, token)).await {
        Ok(r) => r.into_inner().key,
        Err(s) => return json!({ "error": status_json(&s) }),
    };
    let held_under = key.starts_with(format!("{name}/").as_bytes());
    let unlocked = outcome(lock.unlock(with_token(UnlockRequest { key }, token)).await, |_| json!(true));
    json!({ "ok": { "key under name": held_under, "unlock": unlocked } })
}

/// The server-side Election Campaign RPC with `token`; resigns at once
/// when elected.
pub async fn campaign(endpoint: &str, token: Option<&str>, name: &str, lease: i64) -> Value {
    use cairn_proto::v3electionpb::{election_client::ElectionClient, CampaignRequest, ResignRequest};
    let mut election = ElectionClient::new(channel(endpoint).await);
    let request = CampaignRequest {
        name: name.as_bytes().to_vec(),
        lease,
        value: b"v".to_vec(),
    };
    let leader = match election.campaign(with_token(request, token)).await {
        Ok(r) => r.into_inner().leader,
        Err(s) => return json!({ "error": status_json(&s) }),
    };
    let resigned = outcome(election.resign(with_token(ResignRequest { leader }, token)).await, |_| json!(true));
    json!({ "ok": { "resign": resigned } })
}

//! etcd's gRPC-JSON gateway (grpc-gateway v1 as etcd 3.4 configures it):
//! `POST /v3/<service>/<call>` with a JSON request, answered with the JSON
//! of the gRPC response (proto field names, defaults left out, 64-bit
//! integers as strings, bytes as base64).
//!
//! Like etcd's gateway, which dials its own gRPC server, every call goes
//! through the client listener's gRPC service in-process: the same layers
//! (learner gate, metrics, message limits), auth (the `Authorization` header
//! becomes the `token` metadata) and connection identity apply as to a call
//! over the wire. Streams (`/v3/watch`, `/v3/lease/keepalive`, snapshots,
//! `observe`) take newline-separated JSON requests and answer with
//! newline-separated `{"result":…}` objects.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Router;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::body::Body as GrpcBody;
use tonic::{Code, Status};
use tower::ServiceExt;

use super::{plain, HttpSurface};
use crate::client_identity::ClientIdentity;
use crate::proto::etcdserverpb as pb;
use crate::proto::{v3electionpb as election, v3lockpb as lock};

/// A gRPC message's frame header: compression flag and length.
const FRAME_HEADER: usize = 5;
/// HTTP headers forwarded as gRPC metadata, lowercased as `http` keeps names.
const GRPC_METADATA_PREFIX: &str = "grpc-metadata-";
/// Metadata the in-process call sets itself, which a client may not override.
const RESERVED_METADATA: &[&str] = &["content-type", "te"];

/// The gateway's routes, mounted under `/v3` and `/v3beta`.
pub fn routes() -> Router<Arc<HttpSurface>> {
    Router::new()
        .route("/kv/range", unary::<pb::RangeRequest, pb::RangeResponse>("/etcdserverpb.KV/Range"))
        .route("/kv/put", unary::<pb::PutRequest, pb::PutResponse>("/etcdserverpb.KV/Put"))
        .route(
            "/kv/deleterange",
            unary::<pb::DeleteRangeRequest, pb::DeleteRangeResponse>("/etcdserverpb.KV/DeleteRange"),
        )
        .route("/kv/txn", unary::<pb::TxnRequest, pb::TxnResponse>("/etcdserverpb.KV/Txn"))
        .route(
            "/kv/compaction",
            unary::<pb::CompactionRequest, pb::CompactionResponse>("/etcdserverpb.KV/Compact"),
        )
        .route(
            "/watch",
            streaming::<pb::WatchRequest, pb::WatchResponse>("/etcdserverpb.Watch/Watch"),
        )
        .route(
            "/lease/grant",
            unary::<pb::LeaseGrantRequest, pb::LeaseGrantResponse>("/etcdserverpb.Lease/LeaseGrant"),
        )
        .route("/lease/revoke", lease_revoke())
        .route("/kv/lease/revoke", lease_revoke())
        .route(
            "/lease/keepalive",
            streaming::<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>("/etcdserverpb.Lease/LeaseKeepAlive"),
        )
        .route("/lease/timetolive", lease_time_to_live())
        .route("/kv/lease/timetolive", lease_time_to_live())
        .route("/lease/leases", lease_leases())
        .route("/kv/lease/leases", lease_leases())
        .route(
            "/cluster/member/add",
            unary::<pb::MemberAddRequest, pb::MemberAddResponse>("/etcdserverpb.Cluster/MemberAdd"),
        )
        .route(
            "/cluster/member/remove",
            unary::<pb::MemberRemoveRequest, pb::MemberRemoveResponse>("/etcdserverpb.Cluster/MemberRemove"),
        )
        .route(
            "/cluster/member/update",
            unary::<pb::MemberUpdateRequest, pb::MemberUpdateResponse>("/etcdserverpb.Cluster/MemberUpdate"),
        )
        .route(
            "/cluster/member/list",
            unary::<pb::MemberListRequest, pb::MemberListResponse>("/etcdserverpb.Cluster/MemberList"),
        )
        .route(
            "/cluster/member/promote",
            unary::<pb::MemberPromoteRequest, pb::MemberPromoteResponse>("/etcdserverpb.Cluster/MemberPromote"),
        )
        .route(
            "/maintenance/alarm",
            unary::<pb::AlarmRequest, pb::AlarmResponse>("/etcdserverpb.Maintenance/Alarm"),
        )
        .route(
            "/maintenance/status",
            unary::<pb::StatusRequest, pb::StatusResponse>("/etcdserverpb.Maintenance/Status"),
        )
        .route(
            "/maintenance/defragment",
            unary::<pb::DefragmentRequest, pb::DefragmentResponse>("/etcdserverpb.Maintenance/Defragment"),
        )
        .route(
            "/maintenance/hash",
            unary::<pb::HashRequest, pb::HashResponse>("/etcdserverpb.Maintenance/Hash"),
        )
        .route(
            "/maintenance/snapshot",
            streaming::<pb::SnapshotRequest, pb::SnapshotResponse>("/etcdserverpb.Maintenance/Snapshot"),
        )
        .route(
            "/maintenance/transfer-leadership",
            unary::<pb::MoveLeaderRequest, pb::MoveLeaderResponse>("/etcdserverpb.Maintenance/MoveLeader"),
        )
        .merge(auth_routes())
        .route("/lock/lock", unary::<lock::LockRequest, lock::LockResponse>("/v3lockpb.Lock/Lock"))
        .route(
            "/lock/unlock",
            unary::<lock::UnlockRequest, lock::UnlockResponse>("/v3lockpb.Lock/Unlock"),
        )
        .route(
            "/election/campaign",
            unary::<election::CampaignRequest, election::CampaignResponse>("/v3electionpb.Election/Campaign"),
        )
        .route(
            "/election/proclaim",
            unary::<election::ProclaimRequest, election::ProclaimResponse>("/v3electionpb.Election/Proclaim"),
        )
        .route(
            "/election/leader",
            unary::<election::LeaderRequest, election::LeaderResponse>("/v3electionpb.Election/Leader"),
        )
        .route(
            "/election/observe",
            streaming::<election::LeaderRequest, election::LeaderResponse>("/v3electionpb.Election/Observe"),
        )
        .route(
            "/election/resign",
            unary::<election::ResignRequest, election::ResignResponse>("/v3electionpb.Election/Resign"),
        )
        .fallback(not_found)
}

fn auth_routes() -> Router<Arc<HttpSurface>> {
    Router::new()
        .route(
            "/auth/enable",
            unary::<pb::AuthEnableRequest, pb::AuthEnableResponse>("/etcdserverpb.Auth/AuthEnable"),
        )
        .route(
            "/auth/disable",
            unary::<pb::AuthDisableRequest, pb::AuthDisableResponse>("/etcdserverpb.Auth/AuthDisable"),
        )
        .route(
            "/auth/status",
            unary::<pb::AuthStatusRequest, pb::AuthStatusResponse>("/etcdserverpb.Auth/AuthStatus"),
        )
        .route(
            "/auth/authenticate",
            unary::<pb::AuthenticateRequest, pb::AuthenticateResponse>("/etcdserverpb.Auth/Authenticate"),
        )
        .route(
            "/auth/user/add",
            unary::<pb::AuthUserAddRequest, pb::AuthUserAddResponse>("/etcdserverpb.Auth/UserAdd"),
        )
        .route(
            "/auth/user/get",
            unary::<pb::AuthUserGetRequest, pb::AuthUserGetResponse>("/etcdserverpb.Auth/UserGet"),
        )
        .route(
            "/auth/user/list",
            unary::<pb::AuthUserListRequest, pb::AuthUserListResponse>("/etcdserverpb.Auth/UserList"),
        )
        .route(
            "/auth/user/delete",
            unary::<pb::AuthUserDeleteRequest, pb::AuthUserDeleteResponse>("/etcdserverpb.Auth/UserDelete"),
        )
        .route(
            "/auth/user/changepw",
            unary::<pb::AuthUserChangePasswordRequest, pb::AuthUserChangePasswordResponse>("/etcdserverpb.Auth/UserChangePassword"),
        )
        .route(
            "/auth/user/grant",
            unary::<pb::AuthUserGrantRoleRequest, pb::AuthUserGrantRoleResponse>("/etcdserverpb.Auth/UserGrantRole"),
        )
        .route(
            "/auth/user/revoke",
            unary::<pb::AuthUserRevokeRoleRequest, pb::AuthUserRevokeRoleResponse>("/etcdserverpb.Auth/UserRevokeRole"),
        )
        .route(
            "/auth/role/add",
            unary::<pb::AuthRoleAddRequest, pb::AuthRoleAddResponse>("/etcdserverpb.Auth/RoleAdd"),
        )
        .route(
            "/auth/role/get",
            unary::<pb::AuthRoleGetRequest, pb::AuthRoleGetResponse>("/etcdserverpb.Auth/RoleGet"),
        )
        .route(
            "/auth/role/list",
            unary::<pb::AuthRoleListRequest, pb::AuthRoleListResponse>("/etcdserverpb.Auth/RoleList"),
        )
        .route(
            "/auth/role/delete",
            unary::<pb::AuthRoleDeleteRequest, pb::AuthRoleDeleteResponse>("/etcdserverpb.Auth/RoleDelete"),
        )
        .route(
            "/auth/role/grant",
            unary::<pb::AuthRoleGrantPermissionRequest, pb::AuthRoleGrantPermissionResponse>("/etcdserverpb.Auth/RoleGrantPermission"),
        )
        .route(
            "/auth/role/revoke",
            unary::<pb::AuthRoleRevokePermissionRequest, pb::AuthRoleRevokePermissionResponse>("/etcdserverpb.Auth/RoleRevokePermission"),
        )
}

fn lease_revoke() -> MethodRouter<Arc<HttpSurface>> {
    unary::<pb::LeaseRevokeRequest, pb::LeaseRevokeResponse>("/etcdserverpb.Lease/LeaseRevoke")
}

fn lease_time_to_live() -> MethodRouter<Arc<HttpSurface>> {
    unary::<pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse>("/etcdserverpb.Lease/LeaseTimeToLive")
}

fn lease_leases() -> MethodRouter<Arc<HttpSurface>> {
    unary::<pb::LeaseLeasesRequest, pb::LeaseLeasesResponse>("/etcdserverpb.Lease/LeaseLeases")
}

/// What a request message must be for the gateway to carry it.
pub trait Inbound: prost::Message + DeserializeOwned + Default + Send + 'static {}
impl<T: prost::Message + DeserializeOwned + Default + Send + 'static> Inbound for T {}

/// What a response message must be for the gateway to answer with it.
pub trait Outbound: prost::Message + Serialize + Default + Send + 'static {}
impl<T: prost::Message + Serialize + Default + Send + 'static> Outbound for T {}

fn unary<Req: Inbound, Resp: Outbound>(grpc_path: &'static str) -> MethodRouter<Arc<HttpSurface>> {
    post(move |State(surface): State<Arc<HttpSurface>>, request: Request| async move {
        call_unary::<Req, Resp>(&surface, grpc_path, request).await
    })
    .fallback(method_not_allowed)
}

fn streaming<Req: Inbound, Resp: Outbound>(grpc_path: &'static str) -> MethodRouter<Arc<HttpSurface>> {
    post(move |State(surface): State<Arc<HttpSurface>>, request: Request| async move {
        call_streaming::<Req, Resp>(&surface, grpc_path, request).await
    })
    .fallback(method_not_allowed)
}

/// grpc-gateway's answer to a path it has no route for.
pub(crate) async fn not_found(request: Request) -> Response {
    super::drain(request).await;
    plain(StatusCode::NOT_FOUND, "Not Found\n")
}

async fn method_not_allowed(request: Request) -> Response {
    super::drain(request).await;
    plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
}

/// The HTTP status grpc-gateway v1 gives each gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// etcd 3.4's gateway error body, field order included.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

/// One message of a streamed reply.
#[derive(Serialize)]
struct StreamResult<T> {
    result: T,
}

#[derive(Serialize)]
struct StreamFailure<'a> {
    error: StreamError<'a>,
}

/// How grpc-gateway reports an error in the middle of a stream.
#[derive(Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(status: &Status) -> Response {
    let body = ErrorBody {
        error: status.message(),
        message: status.message(),
        code: status.code() as i32,
    };
    json_response(http_status(status.code()), serde_json::to_vec(&body).unwrap_or_default())
}

/// A body beyond any message the gRPC services accept is refused as they
/// refuse such a message.
fn too_large() -> Status {
    Status::resource_exhausted("grpc: received message larger than max")
}

/// grpc-go's refusal of a message over the server's limit, which etcd's
/// gateway passes on.
fn message_too_large(len: usize, max: usize) -> Status {
    Status::resource_exhausted(format!("grpc: received message larger than max ({len} vs. {max})"))
}

/// A request body as a message. As etcd's gateway (Go's JSON decoder
/// reading one value off the body): an empty body or `null` is all
/// defaults, and whatever follows the first value is not read.
fn parse<Req: Inbound>(body: &[u8]) -> Result<Req, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Req::default());
    }
    let mut values = serde_json::Deserializer::from_slice(body);
    match <Option<Req> as serde::Deserialize>::deserialize(&mut values) {
        Ok(message) => Ok(message.unwrap_or_default()),
        Err(e) => Err(Status::invalid_argument(json_error_text(&e))),
    }
}

/// serde_json's message without its " at line L column C" suffix, which
/// Go's decoder does not add.
fn json_error_text(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(FRAME_HEADER + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer with room for the message cannot fail.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// Sends one call through the gRPC service in-process and returns its
/// replies, or the status it failed with before any reply.
async fn call(surface: &HttpSurface, grpc_path: &'static str, parts: &http::request::Parts, body: GrpcBody) -> Result<Replies, Status> {
    let mut request = http::Request::new(body);
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(grpc_path);
    *request.version_mut() = http::Version::HTTP_2;
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
    // As grpc-gateway: `Grpc-Metadata-<name>` headers become metadata;
    // etcd reads the token from `token` metadata first and falls back to
    // the `Authorization` header.
    for (name, value) in &parts.headers {
        let Some(key) = name.as_str().strip_prefix(GRPC_METADATA_PREFIX) else {
            continue;
        };
        if let Ok(key) = http::HeaderName::from_bytes(key.as_bytes()) {
            if !key.as_str().starts_with("grpc-") && !RESERVED_METADATA.contains(&key.as_str()) {
                headers.append(key, value.clone());
            }
        }
    }
    if !headers.contains_key("token") {
        if let Some(token) = parts.headers.get(header::AUTHORIZATION) {
            headers.insert("token", token.clone());
        }
    }
    let extensions = request.extensions_mut();
    if let Some(identity) = parts.extensions.get::<ClientIdentity>() {
        extensions.insert(identity.clone());
    }
    if let Some(tcp) = parts.extensions.get::<tonic::transport::server::TcpConnectInfo>() {
        extensions.insert(tcp.clone());
    }
    let response = match surface.grpc().clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if let Some(status) = Status::from_header_map(response.headers()) {
        if status.code() != Code::Ok {
            return Err(status);
        }
    }
    Ok(Replies {
        body: response.into_body(),
        buf: BytesMut::new(),
        done: false,
    })
}

/// The messages of a gRPC response body, ended by its trailers' status.
struct Replies {
    body: GrpcBody,
    buf: BytesMut,
    done: bool,
}

impl Replies {
    async fn next<M: Outbound>(&mut self) -> Option<Result<M, Status>> {
        loop {
            if self.buf.len() >= FRAME_HEADER {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() >= FRAME_HEADER + len {
                    self.buf.advance(FRAME_HEADER);
                    let message = self.buf.split_to(len);
                    return Some(M::decode(message).map_err(|e| Status::internal(format!("decoding a reply: {e}"))));
                }
            }
            if self.done {
                return (!self.buf.is_empty()).then(|| Err(Status::internal("truncated reply")));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(status)) => {
                    self.done = true;
                    return Some(Err(status));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => {
                        self.done = true;
                        let status = frame.trailers_ref().and_then(Status::from_header_map);
                        if let Some(status) = status.filter(|s| s.code() != Code::Ok) {
                            return Some(Err(status));
                        }
                    }
                },
            }
        }
    }
}

async fn call_unary<Req: Inbound, Resp: Outbound>(surface: &HttpSurface, grpc_path: &'static str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, surface.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => return error_response(&too_large()),
    };
    let message: Req = match parse(&bytes) {
        Ok(m) => m,
        Err(status) => return error_response(&status),
    };
    let len = message.encoded_len();
    if len > surface.config.max_message_bytes {
        return error_response(&message_too_large(len, surface.config.max_message_bytes));
    }
    let body = GrpcBody::new(Full::new(frame(&message)));
    let reply = match call(surface, grpc_path, &parts, body).await {
        // The call is over, and counted as handled, only with its trailers.
        Ok(mut replies) => match (replies.next::<Resp>().await, replies.next::<Resp>().await) {
            (Some(Ok(reply)), None) => Some(Ok(reply)),
            (Some(Ok(_)), Some(Err(status))) => Some(Err(status)),
            (Some(Ok(_)), Some(Ok(_))) => Some(Err(Status::internal("a unary call sent more than one reply"))),
            (other, _) => other,
        },
        Err(status) => Some(Err(status)),
    };
    match reply {
        Some(Ok(reply)) => match serde_json::to_vec(&reply) {
            Ok(json) => json_response(StatusCode::OK, json),
            Err(e) => error_response(&Status::internal(e.to_string())),
        },
        Some(Err(status)) => error_response(&status),
        None => error_response(&Status::internal("the call ended without a reply")),
    }
}

/// Newline-separated (or simply consecutive) JSON requests read off an HTTP
/// body, as gRPC frames. None may exceed `max_bytes`.
fn request_frames<Req: Inbound>(
    body: AxumBody,
    max_bytes: usize,
    max_message: usize,
) -> impl Stream<Item = Result<Frame<Bytes>, Status>> + Send + 'static {
    struct Reading {
        data: axum::body::BodyDataStream,
        buf: BytesMut,
        done: bool,
    }
    let start = Reading {
        data: body.into_data_stream(),
        buf: BytesMut::new(),
        done: false,
    };
    futures::stream::unfold(Some(start), move |state| async move {
        let mut r = state?;
        loop {
            let skip = r.buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            r.buf.advance(skip);
            if !r.buf.is_empty() {
                let mut values = serde_json::Deserializer::from_slice(&r.buf).into_iter::<serde_json::Value>();
                match values.next() {
                    Some(Ok(value)) => {
                        let used = values.byte_offset();
                        r.buf.advance(used);
                        return match serde_json::from_value::<Req>(value) {
                            Ok(message) if message.encoded_len() > max_message => {
                                Some((Err(message_too_large(message.encoded_len(), max_message)), None))
                            }
                            Ok(message) => Some((Ok(Frame::data(frame(&message))), Some(r))),
                            Err(e) => Some((Err(Status::invalid_argument(json_error_text(&e))), None)),
                        };
                    }
                    Some(Err(e)) if e.is_eof() && !r.done => {}
                    Some(Err(e)) => return Some((Err(Status::invalid_argument(json_error_text(&e))), None)),
                    None => {}
                }
            }
            if r.done {
                return None;
            }
            match r.data.next().await {
                Some(Ok(chunk)) if r.buf.len() + chunk.len() <= max_bytes => r.buf.extend_from_slice(&chunk),
                Some(Ok(_)) => return Some((Err(too_large()), None)),
                Some(Err(e)) => return Some((Err(Status::cancelled(e.to_string())), None)),
                None => r.done = true,
            }
        }
    })
}

async fn call_streaming<Req: Inbound, Resp: Outbound>(surface: &HttpSurface, grpc_path: &'static str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let frames = request_frames::<Req>(body, surface.config.max_body_bytes, surface.config.max_message_bytes);
    let replies = match call(surface, grpc_path, &parts, GrpcBody::new(StreamBody::new(frames))).await {
        Ok(replies) => replies,
        Err(status) => return error_response(&status),
    };
    let lines = futures::stream::unfold(Some(replies), |state| async move {
        let mut replies = state?;
        let line = match replies.next::<Resp>().await? {
            Ok(result) => (serde_json::to_vec(&StreamResult { result }), Some(replies)),
            Err(status) => {
                let http = http_status(status.code());
                let error = StreamError {
                    grpc_code: status.code() as i32,
                    http_code: http.as_u16(),
                    message: status.message(),
                    http_status: http.canonical_reason().unwrap_or(""),
                };
                (serde_json::to_vec(&StreamFailure { error }), None)
            }
        };
        let (json, next) = line;
        let mut json = json.unwrap_or_default();
        json.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(json)), next))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        AxumBody::from_stream(lines),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_grpc_gateway() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::FailedPrecondition), StatusCode::PRECONDITION_FAILED);
        assert_eq!(http_status(Code::Unknown), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn empty_body_is_defaults_and_bad_json_is_invalid_argument() {
        let r: pb::RangeRequest = parse(b" \n").expect("empty body parses");
        assert_eq!(r, pb::RangeRequest::default());
        let err = parse::<pb::RangeRequest>(b"{bad").expect_err("malformed");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(!err.message().contains(" at line "), "{}", err.message());
        let err = parse::<pb::RangeRequest>(br#"{"key":"!!"}"#).expect_err("bad base64");
        assert_eq!(err.code(), Code::InvalidArgument);
        let r: pb::RangeRequest = parse(b"null").expect("null parses");
        assert_eq!(r, pb::RangeRequest::default());
        let r: pb::RangeRequest = parse(br#"{"key":"YQ=="}{"key":"Yg=="} trailing"#).expect("first value");
        assert_eq!(r.key, b"a");
    }

    #[test]
    fn frames_carry_the_message() {
        let put = pb::PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        };
        let framed = frame(&put);
        assert_eq!(framed[0], 0);
        assert_eq!(
            u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize,
            framed.len() - 5
        );
        assert_eq!(<pb::PutRequest as prost::Message>::decode(&framed[5..]).expect("decodes"), put);
    }
}

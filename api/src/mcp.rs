//! MCP at `/mcp`: the API's read operations and analysis submission as Model Context Protocol tools, over MCP's
//! streamable HTTP transport, on the same server, port and API keys as the REST routes.
//!
//! **Transport: the official Rust SDK (`rmcp`) with a small actix bridge.** actix has no first-party MCP adapter;
//! rmcp's `StreamableHttpService` is a plain `http::Request -> http::Response` service (tower-style), so
//! [`bridge`] copies the actix request (method, URI, headers, body bytes) into an `http` 1 request, awaits
//! `StreamableHttpService::handle`, and copies the answer back (a JSON body whole, an SSE body as a stream).
//! That keeps the protocol itself (JSON-RPC framing, `initialize` and version negotiation, `server/discover` of the
//! 2026-07-28 revision, the `MCP-Protocol-Version` and SEP-2243 header checks, notifications answered 202, 405 for
//! GET/DELETE) in the SDK that tracks the spec, instead of a hand-written copy of it here. The service runs
//! **stateless** (`legacy_session_mode: false`, no session manager, no `Mcp-Session-Id`) and answers
//! `application/json` (`json_response: true`), so any replica can answer any request without sticky sessions.
//!
//! **Security.** The middleware has already authenticated the key and counted the request in the `statistics`
//! rate-limit class; the [`Caller`] rides to the tools inside the request's extensions. Each tool checks its own
//! scope (`statistics:read`, or `jobs:write` for `run_analysis`, which also counts in the `analyses` class). The
//! `Origin` header, when present, must be a localhost origin, else 403 (the spec's DNS-rebinding defence); rmcp's own
//! `Host` allow-list is off because the API is served under real host names and every request carries a key.
//!
//! **Same numbers as REST.** Each tool turns its arguments into the query string the REST route would get and parses
//! it with the same allowed-parameter list ([`service::scoped_query`]), then calls the same [`AppState`] method, so
//! validation, numbers and error messages are the REST ones. An [`ApiError`] becomes a tool result with
//! `isError: true` whose text is the REST error body (`code`, `message`, `status`, `parameter`); only unknown tools
//! and malformed JSON-RPC are protocol errors. Results are `structuredContent` plus the same JSON as text, and each
//! tool's `outputSchema` is cut from the OpenAPI document's component schemas.

use actix_web::body::BodyStream;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::sync::{Arc, LazyLock};
use utoipa::OpenApi as _;

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::limits::RouteClass;
use crate::model::AnalysisRequest;
use crate::params::Query;
use crate::service;

/// The rmcp service, one per actix worker.
type McpService = StreamableHttpService<Tools, NeverSessionManager>;

/// The `/mcp` resource.
pub fn service() -> actix_web::Resource {
    // Stateless JSON; `Origin` is checked in `bridge` (JSON error body like the rest of the API), and rmcp's
    // loopback-only `Host` allow-list would refuse every real deployment.
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .disable_allowed_hosts()
        .disable_allowed_origins();
    let mcp: McpService = StreamableHttpService::new(
        || Ok(Tools),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    web::resource("/mcp").app_data(Data::new(mcp)).to(bridge)
}

/// What a tool call needs from the HTTP request: the state and the authenticated caller.
#[derive(Clone)]
struct CallContext {
    state: Arc<AppState>,
    caller: Caller,
}

/// actix request -> `http` 1 request -> rmcp -> actix response. actix-web 4 is built on `http` 0.2 and rmcp on
/// `http` 1, so method, URI and headers are copied by value.
async fn bridge(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
    mcp: Data<McpService>,
) -> HttpResponse {
    if let Some(origin) = req.headers().get("origin")
        && !origin.to_str().is_ok_and(origin_allowed)
    {
        return ApiError::OriginNotAllowed.error_response();
    }
    // The middleware authenticated `/mcp` and left the caller here; its absence would be a routing bug.
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return ApiError::MissingKey.error_response();
    };
    // rmcp answers a body that is not JSON with a plain-text 415; JSON-RPC's answer is a parse error.
    if req.method() == actix_web::http::Method::POST
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
    {
        return HttpResponse::BadRequest().json(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32700, "message": format!("Parse error: {e}")},
        }));
    }
    let mut builder = http::Request::builder()
        .method(req.method().as_str())
        .uri(req.uri().to_string());
    for (name, value) in req.headers() {
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    let mut request = match builder.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return ApiError::MalformedBody(e.to_string()).error_response(),
    };
    request.extensions_mut().insert(CallContext {
        state: state.into_inner(),
        caller,
    });

    let (parts, body) = mcp.handle(request).await.into_parts();
    let mut res = HttpResponse::build(
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    for (name, value) in &parts.headers {
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            res.append_header((n, v));
        }
    }
    let sse = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if sse {
        // Only when a handler sends something before its result (none of ours does today): forward events live.
        let frames = body
            .into_data_stream()
            .map(|r| r.map_err(|never| match never {}));
        res.body(BodyStream::new(frames))
    } else {
        match body.collect().await {
            Ok(all) => res.body(all.to_bytes()),
            Err(never) => match never {},
        }
    }
}

/// `Origin` values allowed to reach MCP: `http(s)://localhost`, `127.0.0.1` or `[::1]`, any port.
fn origin_allowed(origin: &str) -> bool {
    let Ok(uri) = origin.trim().parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && matches!(uri.host(), Some("localhost" | "127.0.0.1" | "[::1]"))
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none()
}

/// The tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    SessionStatistics,
    TopAttackers,
    TopCredentials,
    TopCommands,
    SensorStatus,
    SearchSessions,
    GetSession,
    ListFindings,
    GetFinding,
    RunAnalysis,
    GetJob,
}

impl Op {
    const ALL: [Op; 11] = [
        Op::SessionStatistics,
        Op::TopAttackers,
        Op::TopCredentials,
        Op::TopCommands,
        Op::SensorStatus,
        Op::SearchSessions,
        Op::GetSession,
        Op::ListFindings,
        Op::GetFinding,
        Op::RunAnalysis,
        Op::GetJob,
    ];

    /// Name, title, description.
    fn text(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Op::SessionStatistics => (
                "get_session_statistics",
                "Session statistics",
                "Totals over the Cowrie sessions that started in a time window (sessions, unique source IPs, login \
                 attempts, successful logins, sessions with commands, file downloads, mean duration) and a timeline \
                 per hour or day. Same as GET /api/v1/statistics/sessions. The window defaults to the last 7 days.",
            ),
            Op::TopAttackers => (
                "get_top_attackers",
                "Top attacking source IPs",
                "The source IPs with the most sessions in a time window, with event counts and first/last seen. \
                 Same numbers as top_source_ips of GET /api/v1/statistics/threats.",
            ),
            Op::TopCredentials => (
                "get_top_credentials",
                "Top credentials tried",
                "The username/password pairs and usernames tried most often in a time window, with attempts and \
                 successes. Same numbers as top_credentials and top_usernames of GET /api/v1/statistics/threats.",
            ),
            Op::TopCommands => (
                "get_top_commands",
                "Top commands run",
                "The commands attackers ran most often in a time window, defanged for display, with counts and the \
                 command risk score and level. Same as top_commands of GET /api/v1/statistics/threats.",
            ),
            Op::SensorStatus => (
                "get_sensor_status",
                "Sensor status",
                "Per sensor: events and sessions in the window, first/last event, last ingest, dead letters, and \
                 status (ok, stale, failing). Same as GET /api/v1/statistics/sensors.",
            ),
            Op::SearchSessions => (
                "search_sessions",
                "Search sessions",
                "Sessions that started in a time window, newest first, optionally only from one source IP, one \
                 username, or with/without commands. Pages with `cursor` (the previous answer's next_cursor). Same as \
                 GET /api/v1/sessions.",
            ),
            Op::GetSession => (
                "get_session",
                "One session",
                "One Cowrie session by id: its summary and its events in log order (commands defanged in \
                 command_safe). Same as GET /api/v1/sessions/{id}.",
            ),
            Op::ListFindings => (
                "list_findings",
                "List findings",
                "Stored results of one analysis kind (longtail, snowshoe or botnet), newest first. Same as \
                 GET /api/v1/findings/{kind}.",
            ),
            Op::GetFinding => (
                "get_finding",
                "One finding",
                "One stored finding with its whole result (and, for longtail, its detection rows). Same as \
                 GET /api/v1/findings/{kind}/{id}.",
            ),
            Op::RunAnalysis => (
                "run_analysis",
                "Run an analysis",
                "Submit a longtail, snowshoe or botnet analysis as a Celery job routed to a worker; returns the job \
                 id at once (follow it with get_job). Needs an API key with the jobs:write scope and counts against \
                 the analyses rate limit. Same as POST /api/v1/analyses.",
            ),
            Op::GetJob => (
                "get_job",
                "Job status",
                "A submitted job's Celery state (PENDING, STARTED, PROGRESS, SUCCESS, FAILURE, ...), progress, and \
                 result when ready. Same as GET /api/v1/jobs/{id}.",
            ),
        }
    }

    fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.text().0 == name)
    }

    /// The JSON schema of the arguments.
    fn input_schema(self) -> Value {
        let scope = || {
            json!({
                "sensor": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 128},
                           "description": "Only these sensors (a single name is accepted too); all when absent"},
                "start": {"type": "string", "format": "date-time",
                          "description": "Window start, RFC 3339 (default: end minus 7 days)"},
                "end": {"type": "string", "format": "date-time",
                        "description": "Window end, RFC 3339, exclusive (default: now)"},
                "days": {"type": "integer", "minimum": 1, "maximum": 3660,
                         "description": "Window length in days ending at `end` (not with `start`)"},
            })
        };
        let limit = |default: i64, max: i64| {
            json!({"type": "integer", "minimum": 1, "maximum": max,
                   "description": format!("How many rows (default {default})")})
        };
        let kind = json!({"type": "string", "enum": ["longtail", "snowshoe", "botnet"],
                          "description": "The analysis kind"});
        let (mut props, required): (Value, &[&str]) = match self {
            Op::SessionStatistics => {
                let mut p = scope();
                p["bucket_size"] = json!({"type": "string", "enum": ["hour", "day"],
                                          "description": "Timeline bucket (default day)"});
                (p, &[])
            }
            Op::TopAttackers | Op::TopCredentials | Op::TopCommands => {
                let mut p = scope();
                p["limit"] = limit(10, 1000);
                (p, &[])
            }
            Op::SensorStatus => (scope(), &[]),
            Op::SearchSessions => {
                let mut p = scope();
                p["src_ip"] = json!({"type": "string", "description": "Only this source IP"});
                p["username"] = json!({"type": "string",
                    "description": "Only sessions whose (successful, else last) username is this"});
                p["has_commands"] = json!({"type": "boolean",
                    "description": "Only sessions with (true) or without (false) commands"});
                p["limit"] = limit(50, 1000);
                p["cursor"] =
                    json!({"type": "string", "description": "next_cursor of the previous page"});
                (p, &[])
            }
            Op::GetSession => (
                json!({
                    "session_id": {"type": "string", "description": "The Cowrie session id"},
                    "events_limit": {"type": "integer", "minimum": 1, "maximum": 100000,
                                     "description": "At most this many events (default 10000)"},
                }),
                &["session_id"],
            ),
            Op::ListFindings => (
                json!({
                    "kind": kind,
                    "sensor": {"type": "array", "items": {"type": "string"},
                               "description": "Only findings of these sensors"},
                    "limit": limit(20, 1000),
                    "cursor": {"type": "string", "description": "next_cursor of the previous page"},
                }),
                &["kind"],
            ),
            Op::GetFinding => (
                json!({
                    "kind": kind,
                    "id": {"type": ["integer", "string"], "description": "The finding's id"},
                }),
                &["kind", "id"],
            ),
            Op::RunAnalysis => (
                json!({
                    "kind": kind,
                    "sensor": {"type": ["string", "null"], "description": "One sensor; null or absent for all"},
                    "time_window": {
                        "description": "\"7d\", \"24h\", \"90m\", \"2w\" (ending now) or {\"start\": iso, \"end\": iso}; default \"7d\"",
                        "anyOf": [
                            {"type": "string"},
                            {"type": "object", "properties": {"start": {"type": "string"}, "end": {"type": "string"}},
                             "required": ["start", "end"]}
                        ]
                    },
                    "params": {"type": "object",
                               "description": "The detector's thresholds, e.g. rarity_threshold, credential_reuse_threshold"},
                    "priority": {"type": "integer", "minimum": 0, "maximum": 9,
                                 "description": "Celery priority (lower runs first)"},
                }),
                &["kind"],
            ),
            Op::GetJob => (
                json!({"id": {"type": "string", "description": "The job id run_analysis returned"}}),
                &["id"],
            ),
        };
        let mut schema = json!({"type": "object", "properties": props.take()});
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        schema
    }

    /// The output schema: a component of the OpenAPI document, or some of its properties.
    fn output_schema(self) -> Option<JsonObject> {
        let (component, keep): (&str, &[&str]) = match self {
            Op::SessionStatistics => ("SessionStatistics", &[]),
            Op::TopAttackers => ("ThreatStatistics", &["window", "top_source_ips"]),
            Op::TopCredentials => (
                "ThreatStatistics",
                &["window", "top_credentials", "top_usernames"],
            ),
            Op::TopCommands => ("ThreatStatistics", &["window", "top_commands"]),
            Op::SensorStatus => ("SensorStatistics", &[]),
            Op::SearchSessions => ("SessionList", &[]),
            Op::GetSession => ("SessionDetail", &[]),
            Op::ListFindings => ("FindingList", &[]),
            Op::GetFinding => ("FindingDetail", &[]),
            Op::RunAnalysis => ("JobAccepted", &[]),
            Op::GetJob => ("JobStatus", &[]),
        };
        output_schema(component, keep)
    }

    fn tool(self) -> Tool {
        let (name, title, description) = self.text();
        let Value::Object(input) = self.input_schema() else {
            unreachable!("input schemas are objects")
        };
        let annotations = ToolAnnotations::with_title(title)
            .read_only(self != Op::RunAnalysis)
            .destructive(false)
            .idempotent(self != Op::RunAnalysis)
            .open_world(false);
        let mut tool = Tool::new(name, description, input)
            .with_title(title)
            .with_annotations(annotations);
        if let Some(output) = self.output_schema() {
            tool = tool.with_raw_output_schema(Arc::new(output));
        }
        tool
    }

    /// Run the tool: the same query parsing and the same [`AppState`] method as the REST route.
    async fn run(self, args: &Map<String, Value>, cx: &CallContext) -> Result<Value, ApiError> {
        let (state, caller) = (&cx.state, &cx.caller);
        if self == Op::RunAnalysis {
            caller.require(Scope::JobsWrite)?;
            state
                .limiter
                .check(&caller.key_id, &caller.limits, RouteClass::Analyses)
                .await?;
            let req = AnalysisRequest::from_json(Value::Object(without_nulls(args)))?;
            return to_json(&state.submit_analysis(caller, &req).await?);
        }
        caller.require(Scope::StatisticsRead)?;
        match self {
            Op::SessionStatistics => {
                let q = scoped(args, service::SESSIONS_STATS_PARAMS)?;
                to_json(&state.session_statistics(&q).await?)
            }
            Op::TopAttackers | Op::TopCredentials | Op::TopCommands => {
                let q = scoped(args, service::THREATS_PARAMS)?;
                let all = to_json(&state.threat_statistics(&q).await?)?;
                let keep: &[&str] = match self {
                    Op::TopAttackers => &["window", "top_source_ips"],
                    Op::TopCredentials => &["window", "top_credentials", "top_usernames"],
                    _ => &["window", "top_commands"],
                };
                Ok(Value::Object(
                    keep.iter()
                        .map(|k| (k.to_string(), all[*k].clone()))
                        .collect(),
                ))
            }
            Op::SensorStatus => {
                let q = scoped(args, service::SENSORS_PARAMS)?;
                to_json(&state.sensor_statistics(&q).await?)
            }
            Op::SearchSessions => {
                let q = scoped(args, service::SESSION_LIST_PARAMS)?;
                to_json(&state.search_sessions(&q).await?)
            }
            Op::GetSession => {
                let id = required_id(args, "session_id")?;
                let q = Query::parse(
                    &query_string(args, &["session_id"])?,
                    service::SESSION_PARAMS,
                )?;
                to_json(&state.session_detail(&id, &q).await?)
            }
            Op::ListFindings => {
                let kind = finding_kind(args)?;
                let q = Query::parse(&query_string(args, &["kind"])?, service::FINDINGS_PARAMS)?;
                to_json(&state.list_findings(&kind, &q).await?)
            }
            Op::GetFinding => {
                let kind = finding_kind(args)?;
                let id = required_id(args, "id")?;
                Query::parse(&query_string(args, &["kind", "id"])?, &[])?;
                to_json(&state.finding(&kind, &id).await?)
            }
            Op::GetJob => {
                let id = required_id(args, "id")?;
                Query::parse(&query_string(args, &["id"])?, &[])?;
                to_json(&state.job(&id).await?)
            }
            Op::RunAnalysis => unreachable!("handled above"),
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(format!("result: {e}")))
}

/// The arguments as the query string REST would get: strings as they are, numbers and booleans spelled out, a list
/// as the parameter repeated, null as absent. `skip` names the arguments that are path segments in REST.
fn query_string(args: &Map<String, Value>, skip: &[&str]) -> Result<String, ApiError> {
    let mut qs = form_urlencoded::Serializer::new(String::new());
    for (name, value) in args {
        if skip.contains(&name.as_str()) {
            continue;
        }
        let items: &[Value] = match value {
            Value::Array(items) => items,
            one => std::slice::from_ref(one),
        };
        for item in items {
            match item {
                Value::Null => {}
                Value::String(s) => {
                    qs.append_pair(name, s);
                }
                Value::Number(n) => {
                    qs.append_pair(name, &n.to_string());
                }
                Value::Bool(b) => {
                    qs.append_pair(name, if *b { "true" } else { "false" });
                }
                Value::Array(_) | Value::Object(_) => {
                    return Err(ApiError::param(
                        name,
                        "must be a string, number or boolean (or a list of them)",
                    ));
                }
            }
        }
    }
    Ok(qs.finish())
}

/// The scope parameters plus `extra`, as [`service::scoped_query`] parses them for REST.
fn scoped(args: &Map<String, Value>, extra: &[&str]) -> Result<Query, ApiError> {
    service::scoped_query(&query_string(args, &[])?, extra)
}

/// A required identifier (a string, or a whole number for finding ids).
fn required_id(args: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match args.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        None | Some(Value::Null) => Err(ApiError::param(name, "is required")),
        Some(other) => Err(ApiError::param(
            name,
            format!("{other} is not an identifier"),
        )),
    }
}

/// `kind` of the findings tools; in REST it is a path segment, here a named argument.
fn finding_kind(args: &Map<String, Value>) -> Result<String, ApiError> {
    match args.get("kind") {
        Some(Value::String(k)) if matches!(k.as_str(), "longtail" | "snowshoe" | "botnet") => {
            Ok(k.clone())
        }
        None | Some(Value::Null) => Err(ApiError::param("kind", "is required")),
        Some(other) => Err(ApiError::param(
            "kind",
            format!("{other} is not longtail, snowshoe or botnet"),
        )),
    }
}

fn without_nulls(args: &Map<String, Value>) -> Map<String, Value> {
    args.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The OpenAPI document's component schemas.
static COMPONENTS: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let doc = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap_or_default();
    doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default()
});

/// A self-contained JSON schema for component `name` (only the properties in `keep`, when given): the component at
/// the root, the components it refers to under `$defs`. A `Value` field is documented as a bare
/// `{"type": "object"}` in OpenAPI, but it holds any JSON (a job's `result` is often a number or null), so such
/// schemas are relaxed to "any value".
fn output_schema(name: &str, keep: &[&str]) -> Option<JsonObject> {
    let mut root = COMPONENTS.get(name)?.clone();
    if !keep.is_empty() {
        root["properties"]
            .as_object_mut()?
            .retain(|k, _| keep.contains(&k.as_str()));
        root["required"] = json!(keep);
    }
    let mut defs = Map::new();
    let mut todo = Vec::new();
    adapt(&mut root, &mut todo);
    while let Some(dep) = todo.pop() {
        if defs.contains_key(&dep) {
            continue;
        }
        let mut schema = COMPONENTS.get(&dep)?.clone();
        adapt(&mut schema, &mut todo);
        defs.insert(dep, schema);
    }
    let Value::Object(mut root) = root else {
        return None;
    };
    if !defs.is_empty() {
        root.insert("$defs".into(), Value::Object(defs));
    }
    Some(root)
}

/// Point `$ref`s at `$defs` (collecting the names) and relax bare `{"type": "object"}` schemas to any value.
fn adapt(schema: &mut Value, refs: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                refs.push(name.to_string());
                *r = format!("#/$defs/{name}");
            }
            let bare_object = map.get("type") == Some(&json!("object"))
                && ![
                    "properties",
                    "additionalProperties",
                    "items",
                    "$ref",
                    "allOf",
                    "oneOf",
                    "anyOf",
                ]
                .iter()
                .any(|k| map.contains_key(*k));
            if bare_object {
                map.remove("type");
            }
            for v in map.values_mut() {
                adapt(v, refs);
            }
        }
        Value::Array(items) => {
            for v in items {
                adapt(v, refs);
            }
        }
        _ => {}
    }
}

static TOOLS: LazyLock<Vec<Tool>> = LazyLock::new(|| Op::ALL.into_iter().map(Op::tool).collect());

/// The rmcp server handler: tools only.
#[derive(Debug, Clone, Copy)]
pub struct Tools;

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
            .with_server_info(Implementation::new(
                "celeriac-api",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Statistics over Cowrie honeypot sessions (sessions, attackers, credentials, commands, sensors), \
                 stored findings of the longtail, snowshoe and botnet analyses, and analyses submitted as jobs. \
                 Time windows are `start`/`end` (RFC 3339) or `days`; the default is the last 7 days.",
            )
    }

    /// 2025-06-18 (structured tool output) and newer.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Owned(
            ProtocolVersion::KNOWN_VERSIONS
                .iter()
                .filter(|v| v.as_str() >= ProtocolVersion::V_2025_06_18.as_str())
                .cloned()
                .collect(),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(TOOLS.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        TOOLS.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(op) = Op::parse(&request.name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool {:?}", request.name),
                None,
            ));
        };
        let cx = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<CallContext>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("no request context", None))?;
        let args = request.arguments.unwrap_or_default();
        let result = match op.run(&args, &cx).await {
            Ok(value) => CallToolResult::structured(value),
            Err(e) => {
                if e.table().1.is_server_error() {
                    tracing::warn!(tool = op.text().0, error = %e, "MCP tool failed");
                }
                let body = serde_json::to_string(&e.body()).unwrap_or_else(|_| e.to_string());
                CallToolResult::error(vec![ContentBlock::text(body)])
            }
        };
        Ok(result.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        for ok in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8081",
            "http://[::1]:6274",
        ] {
            assert!(origin_allowed(ok), "{ok}");
        }
        for bad in [
            "null",
            "",
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "file://localhost",
            "localhost",
        ] {
            assert!(!origin_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn arguments_become_the_rest_query() {
        let args = json!({"sensor": ["a", "b"], "limit": 5, "has_commands": true, "cursor": null,
                          "start": "2024-01-01T00:00:00+02:00"});
        let qs = query_string(args.as_object().unwrap(), &[]).unwrap();
        assert_eq!(
            qs,
            "sensor=a&sensor=b&limit=5&has_commands=true&start=2024-01-01T00%3A00%3A00%2B02%3A00"
        );
        let q = scoped(args.as_object().unwrap(), service::SESSION_LIST_PARAMS).unwrap();
        assert_eq!(q.sensors().unwrap(), vec!["a", "b"]);
        let e = scoped(
            json!({"limit": 0}).as_object().unwrap(),
            service::THREATS_PARAMS,
        )
        .unwrap()
        .int("limit", 1, 1000, 10)
        .unwrap_err();
        assert_eq!(e.parameter(), Some("limit"));
        let e = scoped(json!({"colour": "red"}).as_object().unwrap(), &[]).unwrap_err();
        assert_eq!(
            (e.code(), e.parameter()),
            ("unknown_parameter", Some("colour"))
        );
        let e = query_string(json!({"start": {"x": 1}}).as_object().unwrap(), &[]).unwrap_err();
        assert_eq!(e.parameter(), Some("start"));
    }

    #[test]
    fn every_tool_has_schemas_that_resolve() {
        let names: Vec<&str> = TOOLS.iter().map(|t| t.name.as_ref()).collect();
        for required in [
            "get_session_statistics",
            "get_top_attackers",
            "get_top_credentials",
            "get_top_commands",
            "get_sensor_status",
            "search_sessions",
            "get_session",
            "run_analysis",
            "get_job",
            "list_findings",
            "get_finding",
        ] {
            assert!(names.contains(&required), "{required}");
        }
        for op in Op::ALL {
            assert_eq!(Op::parse(op.text().0), Some(op));
            let tool = op.tool();
            assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
            let out = Value::Object((*tool.output_schema.expect("output schema")).clone());
            assert_eq!(out["type"], "object", "{}", tool.name);
            // Every reference points into this schema's own $defs.
            let text = out.to_string();
            assert!(!text.contains("#/components/"), "{}", tool.name);
            for piece in text.split("\"#/$defs/").skip(1) {
                let name = piece.split('"').next().unwrap();
                assert!(out["$defs"].get(name).is_some(), "{}: {name}", tool.name);
            }
        }
        let attackers = Op::TopAttackers.output_schema().unwrap();
        let props: Vec<&String> = attackers["properties"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(props.len(), 2);
        // A job's result may be anything (null while pending).
        let job = Value::Object(Op::GetJob.output_schema().unwrap());
        assert!(job["properties"]["result"].get("type").is_none());
    }
}

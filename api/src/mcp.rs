//! MCP endpoint at `/mcp` (placeholder until the streamable HTTP transport lands).

use actix_web::{HttpResponse, web};

/// The `/mcp` resource.
pub fn service() -> actix_web::Resource {
    web::resource("/mcp").to(|| async { HttpResponse::NotImplemented().finish() })
}

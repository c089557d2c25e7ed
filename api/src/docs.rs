//! The OpenAPI 3.1 document at `/openapi.json` and Swagger UI at `/docs/`, both served from the binary (Swagger UI's
//! files are vendored into it at build time by `utoipa-swagger-ui`'s `vendored` feature; no CDN).

use actix_web::{HttpResponse, get};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::openapi::ApiDoc;

/// `/docs` without the slash goes to the UI.
#[get("/docs")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header(("Location", "/docs/"))
        .finish()
}

/// Swagger UI at `/docs/`, reading `/openapi.json` (which it also serves).
pub fn swagger() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi())
}

//! The OpenAPI 3.1 document of `/api/v1`, finished from what the handlers' attributes
//! describe: the bearer token every operation needs and the error every one may answer.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use crate::error::{Body, CODES};

/// The document as served: every operation authenticated with a bearer token and
/// answering its errors (any status it does not list) in the one error shape.
pub fn finish(mut doc: OpenApi) -> String {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token: `usersync token create`, or the console's API tokens page.",
                ))
                .build(),
        ),
    );
    let mut schemas = Vec::new();
    <Body as ToSchema>::schemas(&mut schemas);
    schemas.push((<Body as ToSchema>::name().into_owned(), Body::schema()));
    components.schemas.extend(schemas);
    let codes: Vec<String> = CODES
        .iter()
        .map(|(code, status, meaning)| format!("- `{code}` ({status}): {meaning}"))
        .collect();
    components.responses.insert(
        "Error".into(),
        RefOr::T(
            ResponseBuilder::new()
                .description(format!(
                    "The request failed; `error.code` says why:\n{}",
                    codes.join("\n")
                ))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Error")))
                        .build(),
                )
                .build(),
        ),
    );
    doc.security = Some(vec![SecurityRequirement::new(
        "token",
        Vec::<String>::new(),
    )]);
    for item in doc.paths.paths.values_mut() {
        for operation in operations(item) {
            operation.responses.responses.insert(
                "default".into(),
                RefOr::Ref(Ref::from_response_name("Error")),
            );
        }
    }
    doc.to_pretty_json()
        .expect("the OpenAPI document serialises")
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

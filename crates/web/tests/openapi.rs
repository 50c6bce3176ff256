//! The OpenAPI 3.1 document at /api/v1/openapi.json: served without a token, valid
//! against the OpenAPI Initiative's own schemas, and describing every endpoint the API
//! has. (That every answer matches it is checked by `tests/api.rs`, answer by answer.)

use serde_json::Value;
use usersync_engine::{Engine, EngineOptions};
use usersync_store::testing::{discard, fresh_sqlite_url, open_fresh};

mod common;

/// The document as `GET /api/v1/openapi.json` serves it, without a token.
async fn served_document() -> Value {
    let url = fresh_sqlite_url();
    let store = open_fresh(&url).await;
    let engine = Engine::new(store.clone(), EngineOptions::default());
    let (base, stop) =
        common::serve(|_| usersync_web::router(engine, usersync_web::WebOptions::default())).await;
    let response = reqwest::get(format!("{base}/api/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "the document is JSON"
    );
    let document: Value = response.json().await.unwrap();
    let _ = stop.send(());
    store.close().await;
    discard(&url).await;
    if let Ok(path) = std::env::var("USERSYNC_OPENAPI_OUT") {
        std::fs::write(path, serde_json::to_string_pretty(&document).unwrap()).unwrap();
    }
    document
}

fn oas_schema(name: &str) -> Value {
    let path = format!("{}/tests/oas-3.1/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Validates `document` against the OAS 3.1 schema that also checks each Schema Object.
fn validate_as_openapi_3_1(document: &Value) -> Result<(), String> {
    let mut compiler = boon::Compiler::new();
    let mut root = None;
    for name in ["schema", "schema-base", "dialect", "meta"] {
        let schema = oas_schema(name);
        let id = schema["$id"].as_str().unwrap().to_string();
        if name == "schema-base" {
            root = Some(id.clone());
        }
        compiler.add_resource(&id, schema).unwrap();
    }
    let mut schemas = boon::Schemas::new();
    let index = compiler
        .compile(&root.unwrap(), &mut schemas)
        .map_err(|e| format!("{e:#}"))?;
    schemas
        .validate(document, index)
        .map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let document = served_document().await;
    assert_eq!(document["openapi"], "3.1.0");
    validate_as_openapi_3_1(&document).unwrap_or_else(|e| panic!("not valid OpenAPI 3.1: {e}"));

    // Every reference resolves, within the document.
    let mut refs = Vec::new();
    collect_refs(&document, &mut refs);
    assert!(!refs.is_empty());
    for r in &refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r} points outside the document"));
        assert!(document.pointer(pointer).is_some(), "{r} does not resolve");
    }
}

#[tokio::test]
async fn a_document_that_breaks_the_rules_fails_the_check() {
    // The check above is only worth something if it can fail.
    let mut document = served_document().await;
    document["paths"]["/customers"]["get"]["responses"]["200"]
        .as_object_mut()
        .unwrap()
        .remove("description");
    assert!(validate_as_openapi_3_1(&document).is_err());
    let mut document = served_document().await;
    document["components"]["schemas"]["Customer"]["type"] = Value::from("customer");
    assert!(
        validate_as_openapi_3_1(&document).is_err(),
        "a Schema Object is checked too"
    );
}

#[tokio::test]
async fn the_document_describes_every_endpoint_with_its_answers() {
    let document = served_document().await;
    let paths = document["paths"].as_object().unwrap();
    // The resources the API promises, at least.
    for (path, methods) in [
        ("/customers", &["get", "post"][..]),
        ("/customers/{id}", &["get", "patch"]),
        ("/customers/{id}/domains", &["get", "post"]),
        ("/customers/{id}/users", &["get", "post"]),
        ("/customers/{id}/users/{address}/restore", &["post"]),
        ("/customers/{id}/sources", &["get", "post"]),
        ("/sources/{id}", &["get", "delete"]),
        ("/sources/{id}/preview", &["post"]),
        ("/sources/{id}/sync", &["post"]),
        ("/sources/{id}/filters", &["get", "post"]),
        ("/sources/{id}/filters/{rule}", &["patch", "delete"]),
        ("/sources/{id}/options", &["get", "patch"]),
        ("/sources/{id}/test", &["post"]),
        ("/runs/{id}", &["get"]),
        ("/runs/{id}/confirm", &["post"]),
        ("/runs/{id}/cancel", &["post"]),
        ("/audit", &["get"]),
        ("/tokens", &["get", "post"]),
        ("/tokens/{id}", &["delete"]),
    ] {
        for method in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} is not in the document"
            );
        }
    }
    assert_eq!(document["servers"][0]["url"], "/api/v1");
    assert_eq!(
        document["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} lists no success"
            );
            assert_eq!(
                responses["default"]["$ref"], "#/components/responses/Error",
                "{method} {path} answers its errors in the error shape"
            );
            for (status, response) in responses.iter().filter(|(s, _)| s.starts_with('2')) {
                if status != "204" {
                    assert!(
                        response["content"]["application/json"]["schema"].is_object(),
                        "{method} {path} {status} has no schema"
                    );
                }
            }
            // Every path parameter is declared.
            for name in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            {
                let declared = operation["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(
                    declared,
                    "{method} {path}: parameter {name} is not declared"
                );
            }
        }
    }
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                refs.push(r.clone());
            }
            map.values().for_each(|v| collect_refs(v, refs));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

#[tokio::test]
async fn an_answer_that_differs_from_the_document_fails_the_contract() {
    // tests/api.rs checks every answer with this contract; it must be able to fail.
    let contract = common::contract::Contract::new(served_document().await);
    let customer = serde_json::json!({
        "id": 1, "name": "Contoso", "created_at": "2026-12-01T00:00:00Z", "retention_days": 30
    });
    contract.check("GET", "/customers/1", 200, &customer);
    let location = "http://usersync.test/openapi.json#/components/schemas/Customer";
    assert!(contract.validate(location, &customer).is_ok());
    let mut extra = customer.clone();
    extra["secret"] = Value::from("x");
    assert!(
        contract.validate(location, &extra).is_err(),
        "a field the document does not describe"
    );
    let mut missing = customer.clone();
    missing.as_object_mut().unwrap().remove("name");
    assert!(
        contract.validate(location, &missing).is_err(),
        "a missing field"
    );
    let mut wrong = customer.clone();
    wrong["retention_days"] = Value::from("30");
    assert!(contract.validate(location, &wrong).is_err(), "a wrong type");
    // The flattened outcome of a preview is strict as a whole.
    let outcome = "http://usersync.test/openapi.json#/components/schemas/Outcome";
    assert!(
        contract
            .validate(outcome, &serde_json::json!({"run_id": 1, "surprise": true}))
            .is_err()
    );

    let unlisted =
        std::panic::catch_unwind(|| contract.check("GET", "/customers/1", 201, &customer));
    assert!(
        unlisted.is_err(),
        "a success status the document does not list"
    );
    let error = serde_json::json!({"error": {"code": "not_found", "message": "no such customer"}});
    contract.check("GET", "/customers/1", 404, &error);
    let not_an_error =
        std::panic::catch_unwind(|| contract.check("GET", "/customers/1", 404, &customer));
    assert!(not_an_error.is_err(), "an error answered in another shape");
}

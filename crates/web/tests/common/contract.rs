//! The API's contract: the OpenAPI document it serves, and a check of every answer a test
//! receives against the schema the document gives for its operation and status.

use serde_json::{Value, json};

/// The document, with its schemas made strict: an answer with a field the document does
/// not describe fails as one that lacks a field it requires.
pub struct Contract {
    pub document: Value,
    /// The document as answers are validated against it: strict, a 2020-12 schema.
    strict: Value,
    /// `/customers/{id}`-style paths, split at `/`.
    templates: Vec<(String, Vec<String>)>,
}

const BASE: &str = "http://usersync.test/openapi.json";

impl Contract {
    pub fn new(document: Value) -> Contract {
        let templates = document["paths"]
            .as_object()
            .expect("the document has paths")
            .keys()
            .map(|p| (p.clone(), p.split('/').map(str::to_string).collect()))
            .collect();
        let mut strict = document.clone();
        make_strict(&mut strict);
        strict["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        Contract {
            document,
            strict,
            templates,
        }
    }

    /// The documented path that `path` (after /api/v1, without its query) is an instance of.
    pub fn template(&self, path: &str) -> Option<&str> {
        let parts: Vec<&str> = path.split('/').collect();
        self.templates
            .iter()
            .filter(|(_, t)| t.len() == parts.len())
            .find(|(_, t)| {
                t.iter()
                    .zip(&parts)
                    .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
            })
            .map(|(p, _)| p.as_str())
    }

    /// Checks an answer of the API against the document: the operation is documented, a
    /// success status is listed for it (an error falls under `default`), and the body
    /// matches the schema of that status. Panics with what differs.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let path = path.split('?').next().unwrap();
        let operation = self
            .template(path)
            .map(|t| &self.document["paths"][t][method.to_ascii_lowercase()])
            .filter(|o| o.is_object());
        let Some(operation) = operation else {
            // No such endpoint: the API's fallback answers 404 in the error shape.
            assert_eq!(
                status, 404,
                "{method} {path}: the document has no such operation"
            );
            let error = format!("{BASE}#/components/schemas/Error");
            return self.validate(&error, body).unwrap_or_else(|e| {
                panic!("{method} {path} {status}: the answer {body} is not an error: {e}")
            });
        };
        let template = self.template(path).unwrap();
        let responses = &operation["responses"];
        let key = status.to_string();
        let (pointer, response) = if responses.get(&key).is_some() {
            (key.clone(), &responses[&key])
        } else {
            assert!(
                status >= 400,
                "{method} {template} answered {status}, which the document does not list"
            );
            ("default".to_string(), &responses["default"])
        };
        let response = self.resolve(response);
        let Some(content) = response.get("content") else {
            assert!(
                body.is_null(),
                "{method} {template} {status}: the document gives no body, the answer has {body}"
            );
            return;
        };
        let location = match content["application/json"]["schema"].get("$ref") {
            Some(Value::String(r)) => format!("{BASE}{r}"),
            _ => format!(
                "{BASE}#/paths/{}/{}/responses/{}/content/application~1json/schema",
                escape(template),
                method.to_ascii_lowercase(),
                escape(&pointer)
            ),
        };
        self.validate(&location, body).unwrap_or_else(|e| {
            panic!("{method} {path} {status}: the answer {body} does not match the document: {e}")
        });
    }

    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .document
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("{r} does not resolve")),
            None => value,
        }
    }

    /// Validates `instance` against the schema at `location` (a URL into the document).
    pub fn validate(&self, location: &str, instance: &Value) -> Result<(), String> {
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler
            .add_resource(BASE, self.strict.clone())
            .map_err(|e| e.to_string())?;
        let mut schemas = boon::Schemas::new();
        let index = compiler
            .compile(location, &mut schemas)
            .map_err(|e| format!("{e:#}"))?;
        schemas
            .validate(instance, index)
            .map_err(|e| format!("{e:#}"))
    }
}

/// A path as a JSON pointer's token.
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Adds `unevaluatedProperties: false` to every object schema that lists its properties,
/// unless it is one part of an `allOf` (whose parts see only their own properties; the
/// `allOf` itself is made strict instead, which sees them all).
/// A component schema that is one part of an `allOf` is left open for the same reason.
fn make_strict(value: &mut Value) {
    fn parts_of_all_of(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Array(parts)) = map.get("allOf") {
                    found.extend(
                        parts
                            .iter()
                            .filter_map(|p| p["$ref"].as_str())
                            .map(|r| r.trim_start_matches("#/components/schemas/").to_string()),
                    );
                }
                map.values().for_each(|v| parts_of_all_of(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| parts_of_all_of(v, found)),
            _ => {}
        }
    }
    fn walk(value: &mut Value, in_all_of: bool) {
        match value {
            Value::Object(map) => {
                let is_schema = map.contains_key("properties") || map.contains_key("allOf");
                if is_schema && !in_all_of && !map.contains_key("additionalProperties") {
                    map.insert("unevaluatedProperties".into(), Value::Bool(false));
                }
                for (key, child) in map.iter_mut() {
                    match (key.as_str(), child) {
                        ("allOf", Value::Array(parts)) => {
                            for part in parts {
                                walk(part, true);
                            }
                        }
                        (_, child) => walk(child, false),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, false)),
            _ => {}
        }
    }
    let mut open = Vec::new();
    parts_of_all_of(value, &mut open);
    walk(value, false);
    if let Some(schemas) = value["components"]["schemas"].as_object_mut() {
        for name in open {
            if let Some(Value::Object(schema)) = schemas.get_mut(&name) {
                schema.remove("unevaluatedProperties");
            }
        }
    }
}

//! JSON batching (`POST /v1.0/$batch`): up to 20 sub-requests, each routed,
//! throttled and permission-checked exactly like a standalone request, so a
//! sub-response can be a 429 with `Retry-After` inside a 200 batch.

use crate::graph::{GReq, GResp, error, serve, unauthorized};
use crate::server::Shared;
use crate::util::{Obj, new_guid, push_json_str};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

const MAX_REQUESTS: usize = 20;

pub(crate) async fn handle(shared: &Shared, req: &GReq<'_>, body: &[u8]) -> Response {
    shared.knobs.record(|s| {
        s.batch_requests += 1;
        *s.by_endpoint.entry("$batch".into()).or_default() += 1;
    });
    let resp = envelope(shared, req, body).await;
    if resp.status >= 400 {
        shared.knobs.record(|s| s.errors += 1);
    }
    resp.into_response(req)
}

fn invalid(req: &GReq<'_>, msg: &str) -> GResp {
    error(req, 400, "BadRequest", msg)
}

async fn envelope(shared: &Shared, req: &GReq<'_>, body: &[u8]) -> GResp {
    if let Some(crate::knobs::FaultAction::Status {
        status,
        retry_after_secs,
    }) = shared.knobs.fault(req.path, "")
    {
        shared.knobs.record(|s| s.faults += 1);
        let mut r = error(req, status, "ServiceUnavailable", "Service Unavailable");
        if let Some(s) = retry_after_secs {
            r.headers.push(("retry-after", s.to_string()));
        }
        return r;
    }
    // Sub-requests are answered from the tenant the envelope's token names.
    let tenant = match shared.auth.check(
        req.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
    ) {
        Ok(index) => &shared.tenants[index],
        Err(p) => return unauthorized(req, &p),
    };
    if req.method != "POST" {
        return error(
            req,
            405,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        );
    }
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return invalid(req, "Invalid batch payload format.");
    };
    let Some(requests) = doc.get("requests").and_then(|r| r.as_array()) else {
        return invalid(req, "Invalid batch payload format.");
    };
    if requests.len() > MAX_REQUESTS {
        return invalid(
            req,
            &format!("Number of batch requests exceeds the limit of {MAX_REQUESTS}."),
        );
    }
    struct Sub {
        id: String,
        method: String,
        url: String,
        headers: HeaderMap,
        depends_on: Vec<String>,
    }
    let mut subs = Vec::with_capacity(requests.len());
    for r in requests {
        let id = match r.get("id") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => {
                return invalid(
                    req,
                    "Invalid batch payload format: every request needs an id.",
                );
            }
        };
        let (Some(method), Some(url)) = (
            r.get("method").and_then(|m| m.as_str()),
            r.get("url").and_then(|u| u.as_str()),
        ) else {
            return invalid(
                req,
                "Invalid batch payload format: every request needs a method and a url.",
            );
        };
        if subs.iter().any(|s: &Sub| s.id == id) {
            return invalid(
                req,
                &format!("Batch request ids must be unique; '{id}' is repeated."),
            );
        }
        let mut headers = HeaderMap::new();
        if let Some(h) = r.get("headers").and_then(|h| h.as_object()) {
            for (k, v) in h {
                if let (Ok(k), Some(Ok(v))) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    v.as_str().map(HeaderValue::from_str),
                ) {
                    headers.append(k, v);
                }
            }
        }
        let depends_on = r
            .get("dependsOn")
            .and_then(|d| d.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        subs.push(Sub {
            id,
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers,
            depends_on,
        });
    }
    let mut results: Vec<(String, GResp)> = Vec::with_capacity(subs.len());
    for sub in &subs {
        let request_id = new_guid();
        let client_request_id = sub
            .headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .unwrap_or_else(|| request_id.clone());
        let failed_dep = sub.depends_on.iter().any(|d| {
            results
                .iter()
                .find(|(id, _)| id == d)
                .is_none_or(|(_, r)| r.status >= 400)
        });
        let (path_part, query) = sub.url.split_once('?').unwrap_or((&sub.url, ""));
        let path = format!("/v1.0/{}", path_part.trim_start_matches('/'));
        let sreq = GReq {
            method: &sub.method,
            path: &path,
            raw_query: query,
            headers: &sub.headers,
            base: req.base,
            request_id,
            client_request_id,
        };
        let resp = if failed_dep {
            error(
                &sreq,
                424,
                "FailedDependency",
                "A dependent request failed.",
            )
        } else if sub.url.contains("://") {
            error(
                &sreq,
                400,
                "BadRequest",
                "Invalid request URL: batch request URLs must be relative.",
            )
        } else {
            shared.knobs.record(|s| s.batch_subrequests += 1);
            serve(shared, &sreq, Some(tenant)).await
        };
        results.push((sub.id.clone(), resp));
    }
    let mut out = String::with_capacity(results.iter().map(|(_, r)| r.body.len() + 256).sum());
    out.push_str("{\"responses\":[");
    for (i, (id, r)) in results.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut o = Obj::start(&mut out);
        o.str("id", id);
        o.num("status", i64::from(r.status));
        {
            let buf = o.nested("headers");
            let mut h = Obj::start(buf);
            h.str("Cache-Control", "no-cache");
            h.str("Content-Type", r.content_type);
            for (k, v) in &r.headers {
                let name = match *k {
                    "retry-after" => "Retry-After",
                    "preference-applied" => "Preference-Applied",
                    other => other,
                };
                h.str(name, v);
            }
            h.end();
        }
        if r.content_type.starts_with("application/json") {
            o.raw("body", &r.body);
        } else {
            let buf = o.nested("body");
            push_json_str(buf, &r.body);
        }
        o.end();
    }
    out.push_str("]}");
    GResp {
        status: 200,
        headers: vec![],
        content_type: "application/json",
        body: out,
    }
}

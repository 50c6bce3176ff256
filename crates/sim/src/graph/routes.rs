//! Routing: which handler answers a method and path, with the permission it needs.

use super::*;

pub(super) fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

pub(super) fn route(cx: &Ctx<'_>, req: &GReq<'_>) -> GResp {
    let segs: Vec<String> = req.path[5..]
        .split('/')
        .filter(|s| !s.is_empty())
        .map(path_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    if s.is_empty() {
        return error(req, 400, "BadRequest", "Invalid request.");
    }
    let known = matches!(
        s[0].to_ascii_lowercase().as_str(),
        "users" | "groups" | "domains" | "organization" | "subscribedskus"
    );
    if !known {
        return error(
            req,
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{}'.", s[0]),
        );
    }
    if req.method != "GET" {
        return error(
            req,
            405,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        );
    }
    let q = match Query::parse(req) {
        Ok(q) => q,
        Err(e) => return e,
    };
    let r = match s.as_slice() {
        [u] if eq(u, "users") => list_users(cx, req, &q),
        [u, d] if eq(u, "users") && is_delta(d) => users_delta(cx, req, &q),
        [u, c] if eq(u, "users") && eq(c, "$count") => {
            count(cx, req, USER_READ, |d| d.user_count())
        }
        [u, id] if eq(u, "users") => get_user(cx, req, &q, id),
        [u, id, m] if eq(u, "users") && eq(m, "manager") => manager(cx, req, &q, id),
        [u, id, m, rest @ .., c]
            if eq(u, "users")
                && (eq(m, "memberOf") || eq(m, "transitiveMemberOf"))
                && eq(c, "$count")
                && rest.iter().all(|c| eq(c, "microsoft.graph.group")) =>
        {
            member_of_count(cx, req, id, eq(m, "transitiveMemberOf"))
        }
        [u, id, m, rest @ ..]
            if eq(u, "users")
                && (eq(m, "memberOf") || eq(m, "transitiveMemberOf"))
                && rest.iter().all(|c| eq(c, "microsoft.graph.group")) =>
        {
            // Only groups are modelled, so the group cast changes nothing.
            member_of(cx, req, &q, id, eq(m, "transitiveMemberOf"))
        }
        [u, id, m] if eq(u, "users") && eq(m, "mailboxSettings") => mailbox(cx, req, id, None),
        [u, id, m, p] if eq(u, "users") && eq(m, "mailboxSettings") => {
            mailbox(cx, req, id, Some(p))
        }
        [g] if eq(g, "groups") => list_groups(cx, req, &q),
        [g, d] if eq(g, "groups") && is_delta(d) => groups_delta(cx, req, &q),
        [g, c] if eq(g, "groups") && eq(c, "$count") => count(cx, req, GROUP_READ, |d| {
            let mut n = 0;
            let mut from = 0;
            while let Some((o, _)) = d.next_group(from) {
                n += 1;
                from = o + 1;
            }
            n
        }),
        [g, id] if eq(g, "groups") => get_group(cx, req, &q, id),
        [g, id, m, rest @ .., c]
            if eq(g, "groups")
                && (eq(m, "members") || eq(m, "transitiveMembers"))
                && eq(c, "$count")
                && rest.len() <= 1 =>
        {
            members_count(
                cx,
                req,
                id,
                eq(m, "transitiveMembers"),
                rest.first().copied(),
            )
        }
        [g, id, m, rest @ ..]
            if eq(g, "groups")
                && (eq(m, "members") || eq(m, "transitiveMembers"))
                && rest.len() <= 1 =>
        {
            members(
                cx,
                req,
                &q,
                id,
                eq(m, "transitiveMembers"),
                rest.first().copied(),
            )
        }
        [d] if eq(d, "domains") => domains(cx, req, None),
        [d, id] if eq(d, "domains") => domains(cx, req, Some(id)),
        [o] if eq(o, "organization") => organization(cx, req, None),
        [o, id] if eq(o, "organization") => organization(cx, req, Some(id)),
        [k] if eq(k, "subscribedSkus") => skus(cx, req),
        _ => Err(error(
            req,
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{}'.", s[s.len() - 1]),
        )),
    };
    r.unwrap_or_else(|e| e)
}

pub(super) fn need(cx: &Ctx<'_>, req: &GReq<'_>, perms: &[&str]) -> Result<(), GResp> {
    if cx.has_any(perms) {
        Ok(())
    } else {
        Err(denied(req))
    }
}

pub(super) fn reject_unsupported(req: &GReq<'_>, q: &Query) -> Result<(), GResp> {
    if q.skip.is_some() {
        return Err(bad_request(req, "'$skip' is not supported by the service."));
    }
    if q.orderby.is_some() || q.search.is_some() {
        return Err(unsupported(req));
    }
    Ok(())
}

pub(super) fn wants_count(req: &GReq<'_>, q: &Query) -> Result<bool, GResp> {
    match q.count.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => {
            let eventual = header_str(req.headers, "consistencylevel")
                .is_some_and(|v| v.eq_ignore_ascii_case("eventual"));
            if eventual {
                Ok(true)
            } else {
                Err(bad_request(req, "$count is not currently supported."))
            }
        }
        Some(v) => Err(bad_request(
            req,
            &format!("Invalid value '{v}' for $count."),
        )),
    }
}

pub(super) fn count(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    perms: &[&str],
    f: impl Fn(&Directory) -> u64,
) -> Result<GResp, GResp> {
    need(cx, req, perms)?;
    need_eventual(req)?;
    Ok(count_body(f(&cx.dir())))
}

/// `$count` on directory objects is an advanced query: it needs
/// `ConsistencyLevel: eventual`.
pub(super) fn need_eventual(req: &GReq<'_>) -> Result<(), GResp> {
    if header_str(req.headers, "consistencylevel")
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"))
    {
        Ok(())
    } else {
        Err(bad_request(req, "$count is not currently supported."))
    }
}

/// The `text/plain` body of a `/$count` segment.
pub(super) fn count_body(n: u64) -> GResp {
    GResp {
        status: 200,
        headers: vec![],
        content_type: "text/plain",
        body: n.to_string(),
    }
}

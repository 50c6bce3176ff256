//! Query options: $select, $expand, $top and Prefer: odata.maxpagesize, $count.

use super::*;

#[derive(Default)]
pub(super) struct Query {
    pub(super) select: Option<String>,
    pub(super) top: Option<String>,
    pub(super) skip: Option<String>,
    pub(super) skiptoken: Option<String>,
    pub(super) deltatoken: Option<String>,
    pub(super) filter: Option<String>,
    pub(super) count: Option<String>,
    pub(super) orderby: Option<String>,
    pub(super) search: Option<String>,
    pub(super) expand: Option<String>,
}

impl Query {
    pub(super) fn parse(req: &GReq<'_>) -> Result<Query, GResp> {
        let mut q = Query::default();
        for (k, v) in parse_query(req.raw_query) {
            let dollar = k.starts_with('$');
            let name = k.trim_start_matches('$').to_ascii_lowercase();
            let slot = match name.as_str() {
                "select" => &mut q.select,
                "top" => &mut q.top,
                "skip" => &mut q.skip,
                "skiptoken" => &mut q.skiptoken,
                "deltatoken" => &mut q.deltatoken,
                "filter" => &mut q.filter,
                "count" => &mut q.count,
                "orderby" => &mut q.orderby,
                "search" => &mut q.search,
                "expand" => &mut q.expand,
                "format" => continue,
                _ if dollar => {
                    return Err(error(
                        req,
                        400,
                        "BadRequest",
                        &format!(
                            "Query option '{k}' is not allowed. Make sure that the query option is supported by the service."
                        ),
                    ));
                }
                // Graph ignores custom (non-$) query parameters.
                _ => continue,
            };
            if slot.is_some() {
                return Err(error(
                    req,
                    400,
                    "BadRequest",
                    &format!(
                        "Query option '${name}' was specified more than once, but it must be specified at most once."
                    ),
                ));
            }
            *slot = Some(v);
        }
        Ok(q)
    }
}

pub(super) fn page_size(req: &GReq<'_>, top: Option<&str>) -> Result<usize, GResp> {
    let Some(t) = top else {
        return Ok(DEFAULT_PAGE);
    };
    let n: i64 = t.trim().parse().map_err(|_| {
        error(
            req,
            400,
            "BadRequest",
            &format!("Invalid value '{t}' for query option '$top'."),
        )
    })?;
    if !(1..=MAX_PAGE as i64).contains(&n) {
        return Err(bad_request(
            req,
            &format!("Invalid page size specified: '{n}'. Must be between 1 and 999 inclusive."),
        ));
    }
    Ok(n as usize)
}

/// `Prefer: odata.maxpagesize=N`, if present.
pub(super) fn prefer_max_page(h: &HeaderMap) -> Option<usize> {
    h.get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("odata.maxpagesize")
                .then(|| v.trim().trim_matches('"').parse::<usize>().ok())
                .flatten()
        })
        .map(|n| n.clamp(1, MAX_PAGE))
}

pub(super) fn capped(cx: &Ctx<'_>, n: usize) -> usize {
    match cx.page_cap() {
        Some(c) => n.min(c.max(1)),
        None => n,
    }
}

pub(super) fn split_select(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

pub(super) fn user_select(req: &GReq<'_>, select: Option<&str>) -> Result<Vec<UP>, GResp> {
    let Some(s) = select else {
        return Ok(USER_DEFAULT.to_vec());
    };
    let mut out = Vec::new();
    for name in split_select(s) {
        let p = user_prop(name).ok_or_else(|| {
            bad_request(
                req,
                &format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.user'."
                ),
            )
        })?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Group `$select`; `members` is allowed (and reported) only for delta.
pub(super) fn group_select(
    req: &GReq<'_>,
    select: Option<&str>,
    allow_members: bool,
) -> Result<(Vec<GP>, bool), GResp> {
    let Some(s) = select else {
        return Ok((group_default(), allow_members));
    };
    let mut out = Vec::new();
    let mut members = false;
    for name in split_select(s) {
        if allow_members && name.eq_ignore_ascii_case("members") {
            members = true;
            continue;
        }
        let p = group_prop(name).ok_or_else(|| {
            bad_request(
                req,
                &format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.group'."
                ),
            )
        })?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok((out, members))
}

/// User and group projections of a directoryObject `$select`.
pub(super) type ObjectSelect = (Vec<UP>, Vec<GP>);

/// `$select` on directoryObject collections (members, memberOf): a name must
/// exist on user or group.
pub(super) fn object_select(
    req: &GReq<'_>,
    select: Option<&str>,
) -> Result<Option<ObjectSelect>, GResp> {
    let Some(s) = select else {
        return Ok(None);
    };
    let (mut us, mut gs) = (Vec::new(), Vec::new());
    for name in split_select(s) {
        let u = user_prop(name);
        let g = group_prop(name);
        if u.is_none() && g.is_none() {
            return Err(bad_request(
                req,
                &format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.directoryObject'."
                ),
            ));
        }
        if let Some(u) = u.filter(|u| !us.contains(u)) {
            us.push(u);
        }
        if let Some(g) = g.filter(|g| !gs.contains(g)) {
            gs.push(g);
        }
    }
    us.sort();
    gs.sort();
    Ok(Some((us, gs)))
}

/// `$expand=manager` or `manager($select=...)`; returns the manager's projection.
pub(super) fn parse_expand(req: &GReq<'_>, expand: Option<&str>) -> Result<Option<Vec<UP>>, GResp> {
    let Some(e) = expand.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let (nav, inner) = match e.split_once('(') {
        Some((n, rest)) => (n.trim(), Some(rest.trim_end_matches(')'))),
        None => (e, None),
    };
    if !nav.eq_ignore_ascii_case("manager") {
        return Err(bad_request(
            req,
            &format!(
                "Could not find a navigation property named '{nav}' on type 'microsoft.graph.user'."
            ),
        ));
    }
    let select = inner.and_then(|i| {
        i.split(';').find_map(|o| {
            let (k, v) = o.split_once('=')?;
            k.trim()
                .trim_start_matches('$')
                .eq_ignore_ascii_case("select")
                .then_some(v)
        })
    });
    let mut props = user_select(req, select)?;
    if !props.contains(&UP::Id) {
        props.insert(0, UP::Id);
    }
    Ok(Some(props))
}

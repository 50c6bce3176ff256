//! Groups: the list, one group, members and memberOf (direct and transitive).

use super::*;

pub(super) fn list_groups(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query) -> Result<GResp, GResp> {
    need(cx, req, GROUP_READ)?;
    reject_unsupported(req, q)?;
    if q.expand.is_some() {
        return Err(unsupported(req));
    }
    let st = match &q.skiptoken {
        Some(t) => PageState::decode(cx, req, t, "groups")?,
        None => PageState {
            t: fingerprint(cx),
            r: "groups".into(),
            s: q.select.clone(),
            f: q.filter.clone(),
            n: page_size(req, q.top.as_deref())?,
            ..PageState::default()
        },
    };
    let (props, _) = group_select(req, st.s.as_deref(), false)?;
    let filter = parse_filter(req, st.f.as_deref(), "Group")?;
    let want_count = wants_count(req, q)?;
    let size = capped(cx, st.n);
    let dir = cx.dir();
    let mut items = String::new();
    let mut cursor = st.c;
    let mut n = 0;
    let mut total = 0u64;
    let mut more = false;
    let mut from = 0;
    while let Some((ord, rec)) = dir.next_group(from) {
        from = ord + 1;
        if !group_matches(filter.as_ref(), &rec.group) {
            continue;
        }
        total += 1;
        if ord < st.c {
            continue;
        }
        if n < size {
            comma(&mut items);
            write_group(&mut items, &rec.group, &props, false);
            n += 1;
            cursor = ord + 1;
        } else {
            more = true;
            if !want_count {
                break;
            }
        }
    }
    let next = more.then(|| {
        let token = PageState {
            c: cursor,
            ..st.clone()
        }
        .encode();
        ("@odata.nextLink", link(req, "$skiptoken", &token, true))
    });
    let ctx = context_with_select(req, "groups", st.s.as_deref());
    Ok(GResp::json(collection(
        &ctx,
        want_count.then_some(total),
        next,
        &items,
    )))
}

pub(super) fn get_group(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    q: &Query,
    key: &str,
) -> Result<GResp, GResp> {
    need(cx, req, GROUP_READ)?;
    let (props, _) = group_select(req, q.select.as_deref(), false)?;
    let dir = cx.dir();
    let rec = dir
        .group_ord(key)
        .and_then(|o| dir.group(o))
        .ok_or_else(|| not_found(req, key))?;
    let mut body = String::new();
    let mut o = Obj::start(&mut body);
    o.str(
        "@odata.context",
        &format!(
            "{}/$entity",
            context_with_select(req, "groups", q.select.as_deref())
        ),
    );
    for p in &props {
        write_group_prop(&mut o, &rec.group, *p);
    }
    o.end();
    Ok(GResp::json(body))
}

pub(super) fn write_member_ref(items: &mut String, dir: &Directory, m: MemberRef, removed: bool) {
    let t = match m {
        MemberRef::User(_) => "#microsoft.graph.user",
        MemberRef::Group(_) => "#microsoft.graph.group",
    };
    let id = dir.member_id(m);
    if removed {
        write_removed(items, &id, "deleted", Some(t));
    } else {
        let mut o = Obj::start(items);
        o.str("@odata.type", t);
        o.str("id", &id);
        o.end();
    }
}

pub(super) fn members(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    q: &Query,
    key: &str,
    transitive: bool,
    cast: Option<&str>,
) -> Result<GResp, GResp> {
    need(cx, req, GROUP_READ)?;
    reject_unsupported(req, q)?;
    if q.filter.is_some() || q.expand.is_some() {
        return Err(unsupported(req));
    }
    let want_user = member_cast(req, cast)?;
    let res = format!(
        "{}:{}:{}",
        if transitive { "tm" } else { "m" },
        key.to_lowercase(),
        cast.unwrap_or("")
    );
    let st = match &q.skiptoken {
        Some(t) => PageState::decode(cx, req, t, &res)?,
        None => PageState {
            t: fingerprint(cx),
            r: res,
            s: q.select.clone(),
            n: page_size(req, q.top.as_deref())?,
            ..PageState::default()
        },
    };
    let sel = object_select(req, st.s.as_deref())?;
    let want_count = wants_count(req, q)?;
    let dir = cx.dir();
    let ord = dir.group_ord(key).ok_or_else(|| not_found(req, key))?;
    let list = member_list(&dir, ord, transitive, want_user);
    let size = capped(cx, st.n);
    let start = (st.c as usize).min(list.len());
    let end = (start + size).min(list.len());
    let mut items = String::with_capacity((end - start) * 400);
    write_objects(&mut items, &dir, &list[start..end], sel.as_ref());
    let next = (end < list.len()).then(|| {
        let token = PageState {
            c: end as u64,
            ..st.clone()
        }
        .encode();
        ("@odata.nextLink", link(req, "$skiptoken", &token, true))
    });
    let set = match want_user {
        None => "directoryObjects",
        Some(true) => "users",
        Some(false) => "groups",
    };
    let ctx = context_with_select(req, set, st.s.as_deref());
    Ok(GResp::json(collection(
        &ctx,
        want_count.then_some(list.len() as u64),
        next,
        &items,
    )))
}

/// The type cast segment after `members`: `Some(true)` users only,
/// `Some(false)` groups only.
pub(super) fn member_cast(req: &GReq<'_>, cast: Option<&str>) -> Result<Option<bool>, GResp> {
    match cast.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("microsoft.graph.user") => Ok(Some(true)),
        Some("microsoft.graph.group") => Ok(Some(false)),
        Some(other) => Err(error(
            req,
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{other}'."),
        )),
    }
}

/// Direct or transitive members of a group, optionally only users or groups.
pub(super) fn member_list(
    dir: &Directory,
    ord: u64,
    transitive: bool,
    want_user: Option<bool>,
) -> Vec<MemberRef> {
    let list: Vec<MemberRef> = if transitive {
        dir.transitive_members(ord)
    } else {
        dir.group(ord)
            .map(|r| r.members.clone())
            .unwrap_or_default()
    };
    list.into_iter()
        .filter(|m| match want_user {
            None => true,
            Some(u) => matches!(m, MemberRef::User(_)) == u,
        })
        .collect()
}

/// `GET /groups/{id}/members[/microsoft.graph.user|group]/$count` (and
/// `transitiveMembers`), as Graph serves it with `ConsistencyLevel: eventual`.
pub(super) fn members_count(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    key: &str,
    transitive: bool,
    cast: Option<&str>,
) -> Result<GResp, GResp> {
    need(cx, req, GROUP_READ)?;
    let want_user = member_cast(req, cast)?;
    need_eventual(req)?;
    let dir = cx.dir();
    let ord = dir.group_ord(key).ok_or_else(|| not_found(req, key))?;
    Ok(count_body(
        member_list(&dir, ord, transitive, want_user).len() as u64,
    ))
}

/// The groups a user is a direct or transitive member of.
pub(super) fn user_groups(dir: &Directory, ord: u64, transitive: bool) -> Vec<u64> {
    let mut groups = dir.member_of(MemberRef::User(ord));
    if transitive {
        let mut i = 0;
        while i < groups.len() {
            for p in dir.member_of(MemberRef::Group(groups[i])) {
                if !groups.contains(&p) {
                    groups.push(p);
                }
            }
            i += 1;
        }
    }
    groups
}

/// `GET /users/{id}/memberOf[/microsoft.graph.group]/$count` (and
/// `transitiveMemberOf`).
pub(super) fn member_of_count(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    key: &str,
    transitive: bool,
) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    need_eventual(req)?;
    let dir = cx.dir();
    let ord = dir.user_ord(key).ok_or_else(|| not_found(req, key))?;
    Ok(count_body(user_groups(&dir, ord, transitive).len() as u64))
}

pub(super) fn write_objects(
    items: &mut String,
    dir: &Directory,
    list: &[MemberRef],
    sel: Option<&ObjectSelect>,
) {
    let gdefault = group_default();
    for m in list {
        match m {
            MemberRef::User(o) => {
                if let Some(u) = dir.user(*o) {
                    comma(items);
                    let props = sel.map(|s| s.0.as_slice()).unwrap_or(USER_DEFAULT);
                    write_user(items, dir, &u, props, true, None);
                }
            }
            MemberRef::Group(o) => {
                if let Some(rec) = dir.group(*o) {
                    comma(items);
                    let props = sel.map(|s| s.1.as_slice()).unwrap_or(&gdefault);
                    write_group(items, &rec.group, props, true);
                }
            }
        }
    }
}

pub(super) fn member_of(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    q: &Query,
    key: &str,
    transitive: bool,
) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    reject_unsupported(req, q)?;
    if q.filter.is_some() || q.expand.is_some() {
        return Err(unsupported(req));
    }
    let res = format!(
        "{}:{}",
        if transitive { "tmo" } else { "mo" },
        key.to_lowercase()
    );
    let st = match &q.skiptoken {
        Some(t) => PageState::decode(cx, req, t, &res)?,
        None => PageState {
            t: fingerprint(cx),
            r: res,
            s: q.select.clone(),
            n: page_size(req, q.top.as_deref())?,
            ..PageState::default()
        },
    };
    let sel = object_select(req, st.s.as_deref())?;
    let dir = cx.dir();
    let ord = dir.user_ord(key).ok_or_else(|| not_found(req, key))?;
    let groups = user_groups(&dir, ord, transitive);
    let list: Vec<MemberRef> = groups.into_iter().map(MemberRef::Group).collect();
    let size = capped(cx, st.n);
    let start = (st.c as usize).min(list.len());
    let end = (start + size).min(list.len());
    let mut items = String::new();
    write_objects(&mut items, &dir, &list[start..end], sel.as_ref());
    let next = (end < list.len()).then(|| {
        let token = PageState {
            c: end as u64,
            ..st.clone()
        }
        .encode();
        ("@odata.nextLink", link(req, "$skiptoken", &token, true))
    });
    let ctx = context_with_select(req, "directoryObjects", st.s.as_deref());
    Ok(GResp::json(collection(&ctx, None, next, &items)))
}

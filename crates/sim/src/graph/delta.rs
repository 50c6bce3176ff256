//! Delta queries of users and groups: full rounds, changes since a token, @removed.

use super::*;

pub(super) fn users_delta(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    if q.orderby.is_some() || q.search.is_some() || q.count.is_some() || q.skip.is_some() {
        return Err(unsupported(req));
    }
    let dir = cx.dir();
    let prefer = prefer_max_page(req.headers);
    let mut st = if let Some(t) = &q.skiptoken {
        PageState::decode(cx, req, t, "udelta")?
    } else if let Some(t) = &q.deltatoken {
        if eq(t, "latest") {
            let st = PageState {
                t: fingerprint(cx),
                r: "udelta".into(),
                s: q.select.clone(),
                f: q.filter.clone(),
                x: q.expand.clone(),
                n: prefer.unwrap_or(DEFAULT_PAGE),
                ds: dir.seq,
                e: delta_epoch(cx),
                ..PageState::default()
            };
            let ctx = context_with_select(req, "users", st.s.as_deref());
            let l = link(req, "$deltatoken", &st.encode(), false);
            return Ok(GResp::json(collection(
                &ctx,
                None,
                Some(("@odata.deltaLink", l)),
                "",
            )));
        }
        let mut st = PageState::decode(cx, req, t, "udelta")?;
        st.check_epoch(cx, req)?;
        st.du = dir.seq;
        st.c = 0;
        st.di = false;
        st
    } else {
        PageState {
            t: fingerprint(cx),
            r: "udelta".into(),
            s: q.select.clone(),
            f: q.filter.clone(),
            x: q.expand.clone(),
            n: prefer.unwrap_or(DEFAULT_PAGE),
            c: 0,
            ds: 0,
            du: dir.seq,
            di: true,
            e: delta_epoch(cx),
        }
    };
    if let Some(p) = prefer {
        st.n = p;
    }
    if st.x.is_some() {
        return Err(unsupported(req));
    }
    // `manager` is selectable in delta rounds only (it comes as `manager@delta`).
    let (select, manager) = without_manager(st.s.as_deref());
    let mut props = user_select(req, select.as_deref())?;
    if !props.contains(&UP::Id) {
        props.insert(0, UP::Id);
    }
    if manager {
        props.push(UP::Manager);
    }
    let ids = delta_id_filter(req, st.f.as_deref())?;
    let id_ok = |id: &str| {
        ids.as_ref()
            .is_none_or(|v| v.iter().any(|x| x.eq_ignore_ascii_case(id)))
    };
    let size = capped(cx, st.n);
    let mut items = String::with_capacity(size * 512);
    let mut n = 0;
    let more;
    if st.di {
        let mut cursor = st.c;
        while n < size {
            let Some((ord, u)) = dir.next_user(cursor) else {
                break;
            };
            cursor = ord + 1;
            if id_ok(&u.id) {
                comma(&mut items);
                write_user(&mut items, &dir, &u, &props, false, None);
                n += 1;
            }
        }
        more = dir.next_user(cursor).is_some();
        st.c = cursor;
    } else {
        let mut it = dir.user_changes(st.ds, st.du, st.c).peekable();
        while n < size {
            let Some((seq, ch)) = it.next() else { break };
            st.c = seq;
            match ch {
                Change::New(u) if id_ok(&u.id) => {
                    comma(&mut items);
                    write_user(&mut items, &dir, &u, &props, false, None);
                    n += 1;
                }
                Change::Updated(u, since) if id_ok(&u.id) => {
                    let ord = dir.user_ord(&u.id).unwrap_or_default();
                    let changed = dir.user_changed_props(ord, since);
                    let mut these: Vec<UP> = props
                        .iter()
                        .copied()
                        .filter(|p| *p == UP::Id || changed.contains(p))
                        .collect();
                    // As Graph: with $select, a change to a property not selected does not
                    // make the object appear in the round.
                    if these.len() == 1 {
                        continue;
                    }
                    these.sort();
                    comma(&mut items);
                    write_user(&mut items, &dir, &u, &these, false, None);
                    n += 1;
                }
                Change::Removed(t) if id_ok(&t.id) => {
                    comma(&mut items);
                    write_removed(&mut items, &t.id, t.reason, None);
                    n += 1;
                }
                _ => {}
            }
        }
        more = it.peek().is_some();
    }
    delta_page(req, "users", &st, more, &items, prefer, size)
}

/// A `$select` without `manager`, and whether it named it.
fn without_manager(select: Option<&str>) -> (Option<String>, bool) {
    let Some(select) = select else {
        return (None, false);
    };
    let mut manager = false;
    let rest: Vec<&str> = select
        .split(',')
        .map(str::trim)
        .filter(|p| {
            let is = p.eq_ignore_ascii_case("manager");
            manager |= is;
            !is && !p.is_empty()
        })
        .collect();
    ((!rest.is_empty()).then(|| rest.join(",")), manager)
}

pub(super) fn write_removed(items: &mut String, id: &str, reason: &str, odata_type: Option<&str>) {
    let mut o = Obj::start(items);
    if let Some(t) = odata_type {
        o.str("@odata.type", t);
    }
    o.str("id", id);
    let buf = o.nested("@removed");
    let mut r = Obj::start(buf);
    r.str("reason", reason);
    r.end();
    o.end();
}

pub(super) fn groups_delta(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query) -> Result<GResp, GResp> {
    need(cx, req, GROUP_READ)?;
    if q.orderby.is_some()
        || q.search.is_some()
        || q.count.is_some()
        || q.skip.is_some()
        || q.expand.is_some()
    {
        return Err(unsupported(req));
    }
    let dir = cx.dir();
    let prefer = prefer_max_page(req.headers);
    let fresh = |ds: u64| PageState {
        t: fingerprint(cx),
        r: "gdelta".into(),
        s: q.select.clone(),
        f: q.filter.clone(),
        n: prefer.unwrap_or(DEFAULT_PAGE),
        ds,
        e: delta_epoch(cx),
        ..PageState::default()
    };
    let mut st = if let Some(t) = &q.skiptoken {
        PageState::decode(cx, req, t, "gdelta")?
    } else if let Some(t) = &q.deltatoken {
        if eq(t, "latest") {
            let st = fresh(dir.seq);
            let ctx = context_with_select(req, "groups", st.s.as_deref());
            let l = link(req, "$deltatoken", &st.encode(), false);
            return Ok(GResp::json(collection(
                &ctx,
                None,
                Some(("@odata.deltaLink", l)),
                "",
            )));
        }
        let mut st = PageState::decode(cx, req, t, "gdelta")?;
        st.check_epoch(cx, req)?;
        st.du = dir.seq;
        st.c = 0;
        st.di = false;
        st
    } else {
        PageState {
            du: dir.seq,
            di: true,
            ..fresh(0)
        }
    };
    if let Some(p) = prefer {
        st.n = p;
    }
    let (mut props, want_members) = group_select(req, st.s.as_deref(), true)?;
    if !props.contains(&GP::Id) {
        props.insert(0, GP::Id);
    }
    let ids = delta_id_filter(req, st.f.as_deref())?;
    let id_ok = |id: &str| {
        ids.as_ref()
            .is_none_or(|v| v.iter().any(|x| x.eq_ignore_ascii_case(id)))
    };
    let size = capped(cx, st.n);
    let mut items = String::new();
    let mut n = 0;
    let write_full = |items: &mut String, rec: &crate::directory::GroupRec| {
        let mut o = Obj::start(items);
        for p in &props {
            write_group_prop(&mut o, &rec.group, *p);
        }
        if want_members {
            let buf = o.nested("members@delta");
            buf.push('[');
            let mut inner = String::new();
            for m in &rec.members {
                comma(&mut inner);
                write_member_ref(&mut inner, &dir, *m, false);
            }
            buf.push_str(&inner);
            buf.push(']');
        }
        o.end();
    };
    let more;
    if st.di {
        let mut cursor = st.c;
        while n < size {
            let Some((ord, rec)) = dir.next_group(cursor) else {
                break;
            };
            cursor = ord + 1;
            if id_ok(&rec.group.id) {
                comma(&mut items);
                write_full(&mut items, rec);
                n += 1;
            }
        }
        more = dir.next_group(cursor).is_some();
        st.c = cursor;
    } else {
        let mut it = dir.group_changes(st.ds, st.du, st.c).peekable();
        while n < size {
            let Some((seq, ord, ch)) = it.next() else {
                break;
            };
            st.c = seq;
            match ch {
                Change::New(g) if id_ok(&g.id) => {
                    if let Some(rec) = dir.group(ord) {
                        comma(&mut items);
                        write_full(&mut items, rec);
                        n += 1;
                    }
                }
                Change::Updated(g, since) if id_ok(&g.id) => {
                    let Some(rec) = dir.group(ord) else { continue };
                    comma(&mut items);
                    let mut o = Obj::start(&mut items);
                    for p in &props {
                        if *p == GP::Id || rec.changed.iter().any(|(q, s)| q == p && *s > since) {
                            write_group_prop(&mut o, &rec.group, *p);
                        }
                    }
                    if want_members {
                        let mut changes: Vec<(&MemberRef, &(u64, bool))> = rec
                            .member_changes
                            .iter()
                            .filter(|(_, (s, _))| *s > since)
                            .collect();
                        changes.sort_by_key(|(_, (s, _))| *s);
                        if !changes.is_empty() {
                            let mut inner = String::new();
                            for (m, (_, present)) in changes {
                                comma(&mut inner);
                                write_member_ref(&mut inner, &dir, *m, !present);
                            }
                            let buf = o.nested("members@delta");
                            buf.push('[');
                            buf.push_str(&inner);
                            buf.push(']');
                        }
                    }
                    o.end();
                    n += 1;
                }
                Change::Removed(t) if id_ok(&t.id) => {
                    comma(&mut items);
                    write_removed(&mut items, &t.id, t.reason, None);
                    n += 1;
                }
                _ => {}
            }
        }
        more = it.peek().is_some();
    }
    delta_page(req, "groups", &st, more, &items, prefer, size)
}

/// The end of a delta page: a nextLink while the round has more, else the deltaLink that
/// starts the next round; and the page size applied when the client asked for one.
pub(super) fn delta_page(
    req: &GReq<'_>,
    collection_name: &str,
    st: &PageState,
    more: bool,
    items: &str,
    prefer: Option<usize>,
    size: usize,
) -> Result<GResp, GResp> {
    let ctx = context_with_select(req, collection_name, st.s.as_deref());
    let l = if more {
        (
            "@odata.nextLink",
            link(req, "$skiptoken", &st.encode(), false),
        )
    } else {
        let next_round = PageState {
            ds: st.du,
            du: 0,
            c: 0,
            di: false,
            ..st.clone()
        };
        (
            "@odata.deltaLink",
            link(req, "$deltatoken", &next_round.encode(), false),
        )
    };
    let mut resp = GResp::json(collection(&ctx, None, Some(l), items));
    if let Some(p) = prefer {
        resp.headers.push((
            "preference-applied",
            format!("odata.maxpagesize={}", p.min(size)),
        ));
    }
    Ok(resp)
}

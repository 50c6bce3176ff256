//! Users: the list, one user, the manager, mailbox settings.

use super::*;

pub(super) fn list_users(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    reject_unsupported(req, q)?;
    let st = match &q.skiptoken {
        Some(t) => PageState::decode(cx, req, t, "users")?,
        None => PageState {
            t: fingerprint(cx),
            r: "users".into(),
            s: q.select.clone(),
            f: q.filter.clone(),
            x: q.expand.clone(),
            n: page_size(req, q.top.as_deref())?,
            ..PageState::default()
        },
    };
    let props = user_select(req, st.s.as_deref())?;
    let filter = parse_filter(req, st.f.as_deref(), "User")?;
    let expand = parse_expand(req, st.x.as_deref())?;
    let want_count = wants_count(req, q)?;
    let size = capped(cx, st.n);
    let dir = cx.dir();
    let mut items = String::with_capacity(size * 512);
    let mut cursor = st.c;
    let mut n = 0;
    while n < size {
        let Some((ord, u)) = dir.next_user(cursor) else {
            break;
        };
        cursor = ord + 1;
        if user_matches(filter.as_ref(), &u) {
            comma(&mut items);
            write_user(&mut items, &dir, &u, &props, false, expand.as_deref());
            n += 1;
        }
    }
    let mut more = false;
    while let Some((ord, u)) = dir.next_user(cursor) {
        if user_matches(filter.as_ref(), &u) {
            more = true;
            break;
        }
        cursor = ord + 1;
    }
    let total = if want_count {
        Some(match &filter {
            None => dir.user_count(),
            Some(f) => {
                let mut c = 0;
                let mut from = 0;
                while let Some((ord, u)) = dir.next_user(from) {
                    c += u64::from(user_matches(Some(f), &u));
                    from = ord + 1;
                }
                c
            }
        })
    } else {
        None
    };
    let next = more.then(|| {
        let token = PageState {
            c: cursor,
            ..st.clone()
        }
        .encode();
        ("@odata.nextLink", link(req, "$skiptoken", &token, true))
    });
    let ctx = context_with_select(req, "users", st.s.as_deref());
    Ok(GResp::json(collection(&ctx, total, next, &items)))
}

pub(super) fn get_user(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query, key: &str) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    let dir = cx.dir();
    let ord = dir.user_ord(key).ok_or_else(|| not_found(req, key))?;
    let u = dir.user(ord).ok_or_else(|| not_found(req, key))?;
    // mailboxSettings may be selected on a single user.
    let mut with_mailbox = false;
    let select = q.select.as_deref().map(|s| {
        split_select(s)
            .filter(|p| {
                let m = eq(p, "mailboxSettings");
                with_mailbox |= m;
                !m
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    let select = select.filter(|s| !s.is_empty() || !with_mailbox);
    let props = user_select(req, select.as_deref())?;
    let expand = parse_expand(req, q.expand.as_deref())?;
    let mut body = String::with_capacity(1024);
    write_user(&mut body, &dir, &u, &props, false, expand.as_deref());
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&body).unwrap_or_default();
    if with_mailbox {
        if !cx.has_any(MAILBOX_READ) {
            return Err(mailbox_denied(req));
        }
        if let Some(m) = mailbox_json(&u) {
            v.insert("mailboxSettings".into(), m);
        }
    }
    let mut out = serde_json::Map::new();
    let ctx = format!(
        "{}/$entity",
        context_with_select(req, "users", q.select.as_deref())
    );
    out.insert("@odata.context".into(), ctx.into());
    out.extend(v);
    Ok(GResp::json(serde_json::Value::Object(out).to_string()))
}

pub(super) fn manager(cx: &Ctx<'_>, req: &GReq<'_>, q: &Query, key: &str) -> Result<GResp, GResp> {
    need(cx, req, USER_READ)?;
    let dir = cx.dir();
    let ord = dir.user_ord(key).ok_or_else(|| not_found(req, key))?;
    let u = dir.user(ord).ok_or_else(|| not_found(req, key))?;
    let m = u
        .manager_id
        .as_deref()
        .and_then(|m| dir.user_ord(m))
        .and_then(|o| dir.user(o))
        .ok_or_else(|| not_found(req, "manager"))?;
    let props = user_select(req, q.select.as_deref())?;
    let mut body = String::with_capacity(1024);
    let mut o = Obj::start(&mut body);
    o.str("@odata.context", &context(req, "directoryObjects/$entity"));
    o.str("@odata.type", "#microsoft.graph.user");
    for p in &props {
        write_user_prop(&mut o, &m, *p);
    }
    o.end();
    Ok(GResp::json(body))
}

pub(super) fn mailbox_denied(req: &GReq<'_>) -> GResp {
    error(
        req,
        403,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    )
}

pub(super) fn mailbox_json(u: &SimUser) -> Option<serde_json::Value> {
    let purpose = u.user_purpose?;
    let tz = time_zone_for(u);
    let lang = u
        .preferred_language
        .clone()
        .unwrap_or_else(|| "en-US".into());
    let lang_name = match lang.as_str() {
        "en-GB" => "English (United Kingdom)",
        "de-DE" => "German (Germany)",
        _ => "English (United States)",
    };
    let (date_format, time_format) = match lang.as_str() {
        "en-GB" => ("dd/MM/yyyy", "HH:mm"),
        "de-DE" => ("dd.MM.yyyy", "HH:mm"),
        _ => ("M/d/yyyy", "h:mm tt"),
    };
    let archive: String = u.id.replace('-', "").chars().rev().collect();
    Some(serde_json::json!({
        "archiveFolder": format!("AAMkA{archive}AAA="),
        "timeZone": tz,
        "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
        "dateFormat": date_format,
        "timeFormat": time_format,
        "userPurpose": purpose.as_str(),
        "automaticRepliesSetting": {
            "status": "disabled",
            "externalAudience": "all",
            "internalReplyMessage": "",
            "externalReplyMessage": "",
            "scheduledStartDateTime": {"dateTime": "2024-01-01T00:00:00.0000000", "timeZone": "UTC"},
            "scheduledEndDateTime": {"dateTime": "2024-01-02T00:00:00.0000000", "timeZone": "UTC"}
        },
        "language": {"locale": lang, "displayName": lang_name},
        "workingHours": {
            "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            "startTime": "08:00:00.0000000",
            "endTime": "17:00:00.0000000",
            "timeZone": {"name": tz}
        }
    }))
}

pub(super) fn mailbox(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    key: &str,
    sub: Option<&str>,
) -> Result<GResp, GResp> {
    // Exchange checks its own permission and answers in its own words.
    if !cx.has_any(MAILBOX_READ) {
        return Err(mailbox_denied(req));
    }
    let dir = cx.dir();
    let u = dir.user_ord(key).and_then(|o| dir.user(o)).ok_or_else(|| {
        error(
            req,
            404,
            "ErrorInvalidUser",
            &format!("The requested user '{key}' is invalid."),
        )
    })?;
    let no_mailbox = || {
        error(
            req,
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    };
    let settings = mailbox_json(&u).ok_or_else(no_mailbox)?;
    let ctx_base = format!(
        "{}/v1.0/$metadata#users('{}')/mailboxSettings",
        req.base, u.id
    );
    let mut out = serde_json::Map::new();
    match sub {
        None => {
            out.insert("@odata.context".into(), ctx_base.into());
            if let serde_json::Value::Object(m) = settings {
                out.extend(m);
            }
        }
        Some(p) => {
            let (name, v) = settings
                .as_object()
                .and_then(|m| m.iter().find(|(k, _)| eq(k, p)))
                .ok_or_else(|| {
                    error(
                        req,
                        400,
                        "BadRequest",
                        &format!("Resource not found for the segment '{p}'."),
                    )
                })?;
            out.insert("@odata.context".into(), format!("{ctx_base}/{name}").into());
            match v {
                serde_json::Value::Object(m) => out.extend(m.clone()),
                other => {
                    out.insert("value".into(), other.clone());
                }
            }
        }
    }
    Ok(GResp::json(serde_json::Value::Object(out).to_string()))
}

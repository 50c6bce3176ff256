//! Paging state carried in $skiptoken and $deltatoken, next and delta links, and the
//! JSON of collections, users and groups.

use super::*;

#[derive(Serialize, Deserialize, Default, Clone)]
pub(super) struct PageState {
    /// Tenant fingerprint, so a token from another simulator is refused.
    pub(super) t: u32,
    /// Resource the token belongs to.
    pub(super) r: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) s: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) f: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) x: Option<String>,
    /// Page size.
    pub(super) n: usize,
    /// Position: an ordinal, an offset or a change sequence.
    pub(super) c: u64,
    /// Delta: baseline sequence of the round.
    #[serde(default)]
    pub(super) ds: u64,
    /// Delta: last sequence included in the round.
    #[serde(default)]
    pub(super) du: u64,
    /// Delta: this round is the initial full enumeration.
    #[serde(default)]
    pub(super) di: bool,
    /// Delta: the tenant's delta epoch when the round began (see `expire_delta_tokens`).
    #[serde(default)]
    pub(super) e: u64,
}

pub(super) fn fingerprint(cx: &Ctx<'_>) -> u32 {
    (crate::util::hash_lower(&cx.tenant.bp.tenant_id) & 0xffff_ffff) as u32
}

/// The tenant's current delta epoch.
pub(super) fn delta_epoch(cx: &Ctx<'_>) -> u64 {
    cx.tenant
        .delta_epoch
        .load(std::sync::atomic::Ordering::Relaxed)
}

impl PageState {
    /// A delta state of an earlier epoch: Graph answers 410 Gone, and the client must
    /// start a whole round again.
    pub(super) fn check_epoch(&self, cx: &Ctx<'_>, req: &GReq<'_>) -> Result<(), GResp> {
        if self.e == delta_epoch(cx) {
            Ok(())
        } else {
            Err(error(
                req,
                410,
                "syncStateNotFound",
                "The sync state of the delta token has expired or was not found; start the delta query again without a token.",
            ))
        }
    }

    pub(super) fn encode(&self) -> String {
        b64url(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }
    pub(super) fn decode(
        cx: &Ctx<'_>,
        req: &GReq<'_>,
        token: &str,
        res: &str,
    ) -> Result<PageState, GResp> {
        let st: Option<PageState> =
            b64url_decode(token.trim()).and_then(|b| serde_json::from_slice(&b).ok());
        match st {
            Some(st) if st.t == fingerprint(cx) && st.r == res => Ok(st),
            _ => Err(bad_request(
                req,
                "The specified page token value has expired or is invalid.",
            )),
        }
    }
}

pub(super) fn context(req: &GReq<'_>, what: &str) -> String {
    format!("{}/v1.0/$metadata#{what}", req.base)
}

pub(super) fn context_with_select(req: &GReq<'_>, set: &str, select: Option<&str>) -> String {
    match select {
        Some(s) => context(
            req,
            &format!("{set}({})", split_select(s).collect::<Vec<_>>().join(",")),
        ),
        None => context(req, set),
    }
}

/// Link back to this endpoint with the original query options plus a token.
pub(super) fn link(req: &GReq<'_>, token_name: &str, token: &str, keep_query: bool) -> String {
    let mut url = format!("{}{}?", req.base, req.path);
    if keep_query {
        for part in req.raw_query.split('&').filter(|p| !p.is_empty()) {
            let k = url_decode(part.split('=').next().unwrap_or(""));
            let k = k.trim_start_matches('$');
            if k.eq_ignore_ascii_case("skiptoken") || k.eq_ignore_ascii_case("deltatoken") {
                continue;
            }
            url.push_str(part);
            url.push('&');
        }
    }
    url.push_str(token_name);
    url.push('=');
    url.push_str(token);
    url
}

/// `{"@odata.context", ["@odata.count"], ["@odata.nextLink" | "@odata.deltaLink"], "value"}`.
pub(super) fn collection(
    ctx: &str,
    count: Option<u64>,
    link: Option<(&str, String)>,
    items: &str,
) -> String {
    let mut out = String::with_capacity(items.len() + 512);
    let mut o = Obj::start(&mut out);
    o.str("@odata.context", ctx);
    if let Some(c) = count {
        o.num("@odata.count", c as i64);
    }
    if let Some((k, v)) = &link {
        o.str(k, v);
    }
    {
        let buf = o.nested("value");
        buf.push('[');
        buf.push_str(items);
        buf.push(']');
    }
    o.end();
    out
}

pub(super) fn comma(items: &mut String) {
    if !items.is_empty() {
        items.push(',');
    }
}

pub(super) fn write_user(
    items: &mut String,
    dir: &Directory,
    u: &SimUser,
    props: &[UP],
    odata_type: bool,
    expand: Option<&[UP]>,
) {
    let mut o = Obj::start(items);
    if odata_type {
        o.str("@odata.type", "#microsoft.graph.user");
    }
    for p in props {
        write_user_prop(&mut o, u, *p);
    }
    if let Some(mp) = expand
        && let Some(m) = u
            .manager_id
            .as_deref()
            .and_then(|m| dir.user_ord(m))
            .and_then(|o| dir.user(o))
    {
        let buf = o.nested("manager");
        let mut mo = Obj::start(buf);
        mo.str("@odata.type", "#microsoft.graph.user");
        for p in mp {
            write_user_prop(&mut mo, &m, *p);
        }
        mo.end();
    }
    o.end();
}

pub(super) fn write_group(items: &mut String, g: &SimGroup, props: &[GP], odata_type: bool) {
    let mut o = Obj::start(items);
    if odata_type {
        o.str("@odata.type", "#microsoft.graph.group");
    }
    for p in props {
        write_group_prop(&mut o, g, *p);
    }
    o.end();
}

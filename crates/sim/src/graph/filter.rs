//! $filter: the common subset (eq, ne, startswith, in; and, or, not; parentheses).

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Comma,
}

pub(super) fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match cs.get(i) {
                        None => return None,
                        Some('\'') if cs.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            v.push(*c);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let st = i;
                while i < cs.len() && !matches!(cs[i], ' ' | '\t' | '(' | ')' | ',' | '\'') {
                    i += 1;
                }
                out.push(Tok::Ident(cs[st..i].iter().collect()));
            }
        }
    }
    Some(out)
}

#[derive(Debug, Clone)]
pub(super) enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// property, operator (eq/ne/startswith/in), literals
    Cmp(String, String, Vec<serde_json::Value>),
}

pub(super) struct FilterParser {
    pub(super) toks: Vec<Tok>,
    pub(super) pos: usize,
}

impl FilterParser {
    pub(super) fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }
    pub(super) fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    pub(super) fn or(&mut self) -> Option<Filter> {
        let mut l = self.and()?;
        while self.peek_kw("or") {
            self.pos += 1;
            l = Filter::Or(Box::new(l), Box::new(self.and()?));
        }
        Some(l)
    }
    pub(super) fn and(&mut self) -> Option<Filter> {
        let mut l = self.primary()?;
        while self.peek_kw("and") {
            self.pos += 1;
            l = Filter::And(Box::new(l), Box::new(self.primary()?));
        }
        Some(l)
    }
    pub(super) fn literal(&mut self) -> Option<serde_json::Value> {
        match self.next()? {
            Tok::Str(s) => Some(serde_json::Value::String(s)),
            Tok::Ident(s) => match s.to_ascii_lowercase().as_str() {
                "true" => Some(true.into()),
                "false" => Some(false.into()),
                "null" => Some(serde_json::Value::Null),
                _ => {
                    if let Ok(n) = s.parse::<i64>() {
                        Some(n.into())
                    } else if uuid::Uuid::parse_str(&s).is_ok() {
                        Some(serde_json::Value::String(s))
                    } else {
                        None
                    }
                }
            },
            _ => None,
        }
    }
    pub(super) fn primary(&mut self) -> Option<Filter> {
        match self.next()? {
            Tok::LParen => {
                let f = self.or()?;
                (self.next()? == Tok::RParen).then_some(f)
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("not") => {
                Some(Filter::Not(Box::new(self.primary()?)))
            }
            Tok::Ident(f)
                if (f.eq_ignore_ascii_case("startswith") || f.eq_ignore_ascii_case("endswith"))
                    && self.toks.get(self.pos) == Some(&Tok::LParen) =>
            {
                self.pos += 1;
                let Tok::Ident(prop) = self.next()? else {
                    return None;
                };
                (self.next()? == Tok::Comma).then_some(())?;
                let lit = self.literal()?;
                (self.next()? == Tok::RParen).then_some(())?;
                Some(Filter::Cmp(prop, f.to_ascii_lowercase(), vec![lit]))
            }
            Tok::Ident(prop) => {
                let Tok::Ident(op) = self.next()? else {
                    return None;
                };
                let op = op.to_ascii_lowercase();
                match op.as_str() {
                    "eq" | "ne" => Some(Filter::Cmp(prop, op, vec![self.literal()?])),
                    "in" => {
                        (self.next()? == Tok::LParen).then_some(())?;
                        let mut lits = vec![self.literal()?];
                        loop {
                            match self.next()? {
                                Tok::Comma => lits.push(self.literal()?),
                                Tok::RParen => break,
                                _ => return None,
                            }
                        }
                        Some(Filter::Cmp(prop, op, lits))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

pub(super) fn parse_filter(
    req: &GReq<'_>,
    f: Option<&str>,
    resource: &str,
) -> Result<Option<Filter>, GResp> {
    let Some(f) = f.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let bad = || bad_request(req, &format!("Invalid filter clause: {f}"));
    let toks = tokenize(f).ok_or_else(bad)?;
    let mut p = FilterParser { toks, pos: 0 };
    let filter = p.or().ok_or_else(bad)?;
    if p.pos != p.toks.len() {
        return Err(bad());
    }
    // Only scalar properties the simulator models can be filtered.
    fn check(f: &Filter, ok: &dyn Fn(&str) -> bool) -> Option<String> {
        match f {
            Filter::And(a, b) | Filter::Or(a, b) => check(a, ok).or_else(|| check(b, ok)),
            Filter::Not(a) => check(a, ok),
            Filter::Cmp(p, _, _) => (!ok(p)).then(|| p.clone()),
        }
    }
    let ok: &dyn Fn(&str) -> bool = if resource == "User" {
        &|p: &str| {
            user_prop(p).is_some_and(|u| {
                !matches!(
                    u,
                    UP::Null(_)
                        | UP::Empty(_)
                        | UP::AssignedLicenses
                        | UP::ProxyAddresses
                        | UP::BusinessPhones
                        | UP::OtherMails
                )
            })
        }
    } else {
        &|p: &str| {
            group_prop(p)
                .is_some_and(|g| !matches!(g, GP::Null(_) | GP::Empty(_) | GP::ProxyAddresses))
        }
    };
    if let Some(p) = check(&filter, ok) {
        return Err(error(
            req,
            400,
            "Request_UnsupportedQuery",
            &format!(
                "Unsupported or invalid query filter clause specified for property '{p}' of resource '{resource}'."
            ),
        ));
    }
    Ok(Some(filter))
}

pub(super) fn eval_filter(f: &Filter, get: &dyn Fn(&str) -> serde_json::Value) -> bool {
    use serde_json::Value;
    let eq = |a: &Value, b: &Value| match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    };
    match f {
        Filter::And(a, b) => eval_filter(a, get) && eval_filter(b, get),
        Filter::Or(a, b) => eval_filter(a, get) || eval_filter(b, get),
        Filter::Not(a) => !eval_filter(a, get),
        Filter::Cmp(p, op, lits) => {
            let v = get(p);
            match op.as_str() {
                "eq" => eq(&v, &lits[0]),
                "ne" => !eq(&v, &lits[0]),
                "in" => lits.iter().any(|l| eq(&v, l)),
                "startswith" | "endswith" => match (&v, &lits[0]) {
                    (Value::String(s), Value::String(x)) => {
                        let (s, x) = (s.to_lowercase(), x.to_lowercase());
                        if op == "startswith" {
                            s.starts_with(&x)
                        } else {
                            s.ends_with(&x)
                        }
                    }
                    _ => false,
                },
                _ => false,
            }
        }
    }
}

pub(super) fn user_matches(f: Option<&Filter>, u: &SimUser) -> bool {
    let Some(f) = f else { return true };
    eval_filter(f, &|name| {
        let Some(p) = user_prop(name) else {
            return serde_json::Value::Null;
        };
        let mut buf = String::new();
        let mut o = Obj::start(&mut buf);
        write_user_prop(&mut o, u, p);
        o.end();
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&buf)
            .ok()
            .and_then(|m| m.into_iter().next().map(|(_, v)| v))
            .unwrap_or_default()
    })
}

pub(super) fn group_matches(f: Option<&Filter>, g: &SimGroup) -> bool {
    let Some(f) = f else { return true };
    eval_filter(f, &|name| {
        let Some(p) = group_prop(name) else {
            return serde_json::Value::Null;
        };
        let mut buf = String::new();
        let mut o = Obj::start(&mut buf);
        write_group_prop(&mut o, g, p);
        o.end();
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&buf)
            .ok()
            .and_then(|m| m.into_iter().next().map(|(_, v)| v))
            .unwrap_or_default()
    })
}

/// Delta only supports `id eq '...'` (possibly or-ed).
pub(super) fn delta_id_filter(
    req: &GReq<'_>,
    f: Option<&str>,
) -> Result<Option<Vec<String>>, GResp> {
    let Some(f) = f.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let toks = tokenize(f).ok_or_else(|| unsupported(req))?;
    let mut p = FilterParser { toks, pos: 0 };
    let filter = p.or().ok_or_else(|| unsupported(req))?;
    fn ids(f: &Filter, out: &mut Vec<String>) -> bool {
        match f {
            Filter::Or(a, b) => ids(a, out) && ids(b, out),
            Filter::Cmp(p, op, lits) if p.eq_ignore_ascii_case("id") && op == "eq" => {
                lits.iter().all(|l| match l.as_str() {
                    Some(s) => {
                        out.push(s.to_lowercase());
                        true
                    }
                    None => false,
                })
            }
            _ => false,
        }
    }
    let mut out = Vec::new();
    if !ids(&filter, &mut out) || p.pos != p.toks.len() {
        return Err(unsupported(req));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_evaluate() {
        let toks = tokenize(
            "accountEnabled eq true and (startswith(mail,'an') or userType in ('Guest','x'))",
        )
        .unwrap();
        let f = FilterParser { toks, pos: 0 }.or().unwrap();
        let get = |p: &str| match p {
            "accountEnabled" => serde_json::Value::Bool(true),
            "mail" => "Anne@x.com".into(),
            _ => "Member".into(),
        };
        assert!(eval_filter(&f, &get));
        let toks = tokenize("userType eq 'Guest'").unwrap();
        let f = FilterParser { toks, pos: 0 }.or().unwrap();
        assert!(!eval_filter(&f, &get));
    }
}

//! The tenant's domains, organization and subscribed SKUs, and single-value answers.

use super::*;

/// Applies `$select` to small, serde-built collections.
pub(super) fn select_values(
    req: &GReq<'_>,
    items: Vec<serde_json::Value>,
    type_name: &str,
) -> Result<Vec<serde_json::Value>, GResp> {
    let q = Query::parse(req)?;
    let Some(sel) = q.select else {
        return Ok(items);
    };
    let names: Vec<&str> = split_select(&sel).collect();
    let Some(first) = items.first().and_then(|v| v.as_object()) else {
        return Ok(items);
    };
    let mut keys = Vec::new();
    for n in &names {
        match first.keys().find(|k| eq(k, n)) {
            Some(k) => keys.push(k.clone()),
            None => {
                return Err(bad_request(
                    req,
                    &format!(
                        "Could not find a property named '{n}' on type 'microsoft.graph.{type_name}'."
                    ),
                ));
            }
        }
    }
    Ok(items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::Object(m) => {
                serde_json::Value::Object(m.into_iter().filter(|(k, _)| keys.contains(k)).collect())
            }
            v => v,
        })
        .collect())
}

pub(super) fn value_collection(req: &GReq<'_>, set: &str, items: Vec<serde_json::Value>) -> GResp {
    let body = serde_json::json!({
        "@odata.context": context(req, set),
        "value": items,
    });
    GResp::json(body.to_string())
}

pub(super) fn single(req: &GReq<'_>, set: &str, item: serde_json::Value) -> GResp {
    let mut out = serde_json::Map::new();
    out.insert(
        "@odata.context".into(),
        context(req, &format!("{set}/$entity")).into(),
    );
    if let serde_json::Value::Object(m) = item {
        out.extend(m);
    }
    GResp::json(serde_json::Value::Object(out).to_string())
}

pub(super) fn domains(cx: &Ctx<'_>, req: &GReq<'_>, key: Option<&str>) -> Result<GResp, GResp> {
    need(cx, req, DOMAIN_READ)?;
    let dir = cx.dir();
    let items: Vec<serde_json::Value> = dir
        .bp
        .domains
        .iter()
        .map(|d| {
            serde_json::json!({
                "authenticationType": d.authentication_type,
                "availabilityStatus": null,
                "id": d.id,
                "isAdminManaged": true,
                "isDefault": d.is_default,
                "isInitial": d.is_initial,
                "isRoot": d.is_root,
                "isVerified": d.is_verified,
                "passwordNotificationWindowInDays": 14,
                "passwordValidityPeriodInDays": 2_147_483_647,
                "supportedServices": d.supported_services,
                "state": null,
            })
        })
        .collect();
    let items = select_values(req, items, "domain")?;
    match key {
        None => Ok(value_collection(req, "domains", items)),
        Some(k) => items
            .into_iter()
            .find(|v| v["id"].as_str().is_some_and(|id| eq(id, k)))
            .map(|v| single(req, "domains", v))
            .ok_or_else(|| not_found(req, k)),
    }
}

pub(super) fn organization(
    cx: &Ctx<'_>,
    req: &GReq<'_>,
    key: Option<&str>,
) -> Result<GResp, GResp> {
    need(cx, req, ORG_READ)?;
    let dir = cx.dir();
    let bp = &dir.bp;
    let verified: Vec<serde_json::Value> = bp
        .domains
        .iter()
        .filter(|d| d.is_verified)
        .map(|d| {
            let caps: Vec<&str> = d
                .supported_services
                .iter()
                .map(String::as_str)
                .filter(|s| matches!(*s, "Email" | "OfficeCommunicationsOnline"))
                .collect();
            serde_json::json!({
                "capabilities": if caps.is_empty() { "None".to_string() } else { caps.join(", ") },
                "isDefault": d.is_default,
                "isInitial": d.is_initial,
                "name": d.id,
                "type": d.authentication_type,
            })
        })
        .collect();
    let org = serde_json::json!({
        "id": bp.tenant_id,
        "deletedDateTime": null,
        "businessPhones": ["+1 425 555 0100"],
        "city": "Redmond",
        "country": null,
        "countryLetterCode": "US",
        "createdDateTime": "2019-01-01T00:00:00Z",
        "displayName": bp.org_name,
        "marketingNotificationEmails": [],
        "onPremisesLastSyncDateTime": null,
        "onPremisesSyncEnabled": null,
        "postalCode": "98052",
        "preferredLanguage": "en",
        "privacyProfile": null,
        "securityComplianceNotificationMails": [],
        "securityComplianceNotificationPhones": [],
        "state": "WA",
        "street": "1 Microsoft Way",
        "technicalNotificationMails": [format!("admin@{}", bp.mail_domains[0])],
        "tenantType": "AAD",
        "assignedPlans": [],
        "provisionedPlans": [],
        "verifiedDomains": verified,
    });
    let items = select_values(req, vec![org], "organization")?;
    match key {
        None => Ok(value_collection(req, "organization", items)),
        Some(k) if eq(k, &bp.tenant_id) => Ok(single(
            req,
            "organization",
            items.into_iter().next().unwrap_or_default(),
        )),
        Some(k) => Err(not_found(req, k)),
    }
}

pub(super) fn skus(cx: &Ctx<'_>, req: &GReq<'_>) -> Result<GResp, GResp> {
    need(cx, req, SKU_READ)?;
    let dir = cx.dir();
    let bp = &dir.bp;
    let items: Vec<serde_json::Value> = dir
        .skus
        .iter()
        .map(|s| {
            let mut r = crate::util::Rng::new(0, 99, crate::util::hash_lower(&s.sku_id));
            serde_json::json!({
                "accountName": bp.org_name,
                "accountId": bp.tenant_id,
                "appliesTo": s.applies_to,
                "capabilityStatus": s.capability_status,
                "consumedUnits": s.consumed_units,
                "id": format!("{}_{}", bp.tenant_id, s.sku_id),
                "skuId": s.sku_id,
                "skuPartNumber": s.sku_part_number,
                "subscriptionIds": [r.guid().to_string()],
                "prepaidUnits": {
                    "enabled": s.prepaid_enabled,
                    "suspended": s.prepaid_suspended,
                    "warning": s.prepaid_warning,
                    "lockedOut": s.prepaid_locked_out,
                },
                "servicePlans": s.service_plans.iter().map(|(id, name)| serde_json::json!({
                    "servicePlanId": id,
                    "servicePlanName": name,
                    "provisioningStatus": "Success",
                    "appliesTo": "User",
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let items = select_values(req, items, "subscribedSku")?;
    Ok(value_collection(req, "subscribedSkus", items))
}

//! What the surfaces print or return for a plan: a documented output type of its own, so
//! that the stored plan (the engine's record, which may change with the storage) and the
//! JSON that scripts read (which must not) are two things.

use serde::Serialize;
use usersync_core::{DirectoryUser, DomainName, Plan, PlannedGroup, PlannedUpdate, Skip};

/// A preview's (or a run's) plan as `--json` prints it. Every list is always present;
/// `counts` says how many of each.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport<'a> {
    pub run_id: i64,
    pub counts: PlanCounts,
    /// Users the sync adds, each with the rule that placed it (`placed_by`).
    pub add: &'a [DirectoryUser],
    /// Existing entries it changes, field by field (`changes`: `[before, after]`).
    pub update: &'a [PlannedUpdate],
    /// Entries it removes (soft-deleted, restorable for the customer's retention).
    pub remove: &'a [DirectoryUser],
    /// Source objects it does not import, each with `code` and `reason`.
    pub skip: &'a [Skip],
    /// Objects imported with something left out, each with `code` and `reason`.
    pub warnings: &'a [Skip],
    /// Removed entries deleted for good because a live user takes their address.
    pub purge: &'a [DirectoryUser],
    /// Tenant domains added to the customer first.
    pub import_domains: &'a [DomainName],
    /// Console groups kept in step with tenant groups; absent when the source manages none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<&'a [PlannedGroup]>,
    /// Removals the deletion safeguard holds until they are confirmed.
    pub held: &'a [DirectoryUser],
}

/// How many of each a plan holds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    pub add: usize,
    pub update: usize,
    pub remove: usize,
    pub skip: usize,
    pub warnings: usize,
    pub linked: usize,
    pub held: usize,
}

impl<'a> PlanReport<'a> {
    pub fn new(run_id: i64, plan: &'a Plan) -> Self {
        PlanReport {
            run_id,
            counts: PlanCounts {
                add: plan.add.len(),
                update: plan.update.len(),
                remove: plan.remove.len(),
                skip: plan.skip.len(),
                warnings: plan.warnings.len(),
                linked: plan.linked(),
                held: plan.held.len(),
            },
            add: &plan.add,
            update: &plan.update,
            remove: &plan.remove,
            skip: &plan.skip,
            warnings: &plan.warnings,
            purge: &plan.purge,
            import_domains: &plan.import_domains,
            groups: plan.groups.as_deref(),
            held: &plan.held,
        }
    }
}

//! Who may read what: one table, role x what is read -> how much of it.
//! Every query of the application layer asks this table, and the table's
//! test below is the specification.
//!
//! Commands are not here: the aggregates decide them (`Organization` checks
//! the actor's role as part of each command's invariants).

use crate::organization::Role;

/// What a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Read {
    /// The organization's name, seats and settings.
    Organization,
    /// The member list (names, e-mail addresses, roles).
    Members,
    /// Enrolled devices.
    Devices,
    /// Time per member and day (dashboards).
    Dashboard,
    /// A device's raw timelines (window titles where the policy allows).
    DeviceTimeline,
    /// The classification rules.
    CategoryRules,
    /// The organization's history: who did what and when.
    History,
    /// The platform's read models and dead letters (only in the operator
    /// organization).
    Operations,
    /// How proposed classification rules would classify recent activity
    /// (those who may change the rules).
    RulesPreview,
    /// Teams, clients, projects with their tasks and budgets, and the
    /// attribution rules.
    Projects,
    /// Project time per project, task, member and day (and its export).
    ProjectTime,
    /// Members' weeks: entries, time and decisions.
    Timesheets,
    /// The approvals queue.
    Approvals,
    /// Leave requests, balances and who is away when.
    Leave,
    /// Pay rates, payroll runs and their lines. Managers see their own; the
    /// org's pay policy may let them see their teams' (`PayVisibility`).
    Payroll,
}

/// How much of it the reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Nothing: the query is refused.
    Nothing,
    /// Only what is about the reader themselves.
    Own,
    /// The reader themselves and the members of the teams they manage.
    Team,
    /// Everything in the organization.
    Org,
}

/// The scope of `read` for an active member with `role`.
pub fn scope(role: Role, read: Read) -> Scope {
    use Read::*;
    use Role::*;
    match (read, role) {
        (Organization | CategoryRules, _) => Scope::Org,
        (Members, Employee) => Scope::Nothing,
        (Members, Owner | Admin | Manager | Auditor) => Scope::Org,
        // Managers read every member's timeline, so they see whose devices
        // those timelines come from.
        (Devices, Owner | Admin | Manager | Auditor) => Scope::Org,
        (Devices, Employee) => Scope::Own,
        // Managers see their teams' time; the raw timelines of any member,
        // as before teams existed.
        (Dashboard, Owner | Admin | Auditor) => Scope::Org,
        (Dashboard, Manager) => Scope::Team,
        (DeviceTimeline, Owner | Admin | Manager | Auditor) => Scope::Org,
        (Dashboard | DeviceTimeline, Employee) => Scope::Own,
        (History, Owner | Admin | Auditor) => Scope::Org,
        (History, Manager | Employee) => Scope::Nothing,
        (Operations, Owner | Admin) => Scope::Org,
        (Operations, Manager | Employee | Auditor) => Scope::Nothing,
        (RulesPreview, Owner | Admin) => Scope::Org,
        (RulesPreview, Manager | Employee | Auditor) => Scope::Nothing,
        (Projects, _) => Scope::Org,
        (ProjectTime | Timesheets, Owner | Admin | Auditor) => Scope::Org,
        (ProjectTime | Timesheets, Manager) => Scope::Team,
        (ProjectTime | Timesheets, Employee) => Scope::Own,
        (Approvals, Owner | Admin) => Scope::Org,
        (Approvals, Manager) => Scope::Team,
        (Approvals, Employee | Auditor) => Scope::Nothing,
        (Leave, Owner | Admin | Auditor) => Scope::Org,
        (Leave, Manager) => Scope::Team,
        (Leave, Employee) => Scope::Own,
        (Payroll, Owner | Admin | Auditor) => Scope::Org,
        (Payroll, Manager | Employee) => Scope::Own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permission_table() {
        use Read::*;
        use Scope::{Nothing as No, Org, Own, Team};
        // Columns: owner, admin, manager, employee, auditor.
        let table: [(Read, [Scope; 5]); 15] = [
            (Organization, [Org, Org, Org, Org, Org]),
            (Members, [Org, Org, Org, No, Org]),
            (Devices, [Org, Org, Org, Own, Org]),
            (Dashboard, [Org, Org, Team, Own, Org]),
            (DeviceTimeline, [Org, Org, Org, Own, Org]),
            (CategoryRules, [Org, Org, Org, Org, Org]),
            (History, [Org, Org, No, No, Org]),
            (Operations, [Org, Org, No, No, No]),
            (RulesPreview, [Org, Org, No, No, No]),
            (Projects, [Org, Org, Org, Org, Org]),
            (ProjectTime, [Org, Org, Team, Own, Org]),
            (Timesheets, [Org, Org, Team, Own, Org]),
            (Approvals, [Org, Org, Team, No, No]),
            (Leave, [Org, Org, Team, Own, Org]),
            (Payroll, [Org, Org, Own, Own, Org]),
        ];
        for (read, scopes) in table {
            for (role, expected) in Role::ALL.into_iter().zip(scopes) {
                assert_eq!(scope(role, read), expected, "{read:?} for {role:?}");
            }
        }
    }
}

//! The organization of work: teams and their managers, clients, and the
//! attribution rules that say which project observed activity is for.
//!
//! Invariants: owners and admins create teams, set their managers and put
//! members in them, and set the attribution rules; owners, admins and
//! managers create clients; team and client ids are used once; names are 1
//! to 200 characters; a team's managers are active owners, admins or
//! managers; a member is in at most one team. Who may decide on a member's
//! timesheet follows from this: an active owner or admin, or an active
//! manager of the member's team ([`Organization::may_approve`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{MAX_NAME_CHARS, OrgError, OrgEvent, Organization, Role};
use crate::attribution::{Attribution, AttributionRule};
use crate::ids::{PersonId, Token};

/// A team.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    /// Its name.
    pub name: String,
    /// Who decides on its members' timesheets.
    pub managers: BTreeSet<PersonId>,
}

fn check_name(name: &str) -> Result<(), OrgError> {
    let chars = name.trim().chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.trim() != name {
        return Err(OrgError::InvalidName);
    }
    Ok(())
}

impl Organization {
    /// Whether `actor` may approve or reject `member`'s weeks: an active
    /// owner or admin, or an active manager who manages the member's team.
    /// Nobody decides on their own week (the timesheet checks that).
    pub fn may_approve(&self, actor: &PersonId, member: &PersonId) -> bool {
        match self.active_role(actor) {
            Some(Role::Owner | Role::Admin) => true,
            Some(Role::Manager) => self.manages(actor, member),
            _ => false,
        }
    }

    /// Whether `actor` is a manager of `member`'s team.
    pub fn manages(&self, actor: &PersonId, member: &PersonId) -> bool {
        self.members
            .get(member)
            .and_then(|m| m.team.as_ref())
            .and_then(|team| self.teams.get(team))
            .is_some_and(|team| team.managers.contains(actor))
    }

    /// The members of the teams `actor` manages.
    pub fn managed_members(&self, actor: &PersonId) -> BTreeSet<PersonId> {
        self.members
            .iter()
            .filter(|(id, _)| self.manages(actor, id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub(super) fn create_team(
        &self,
        actor: PersonId,
        team: Token,
        name: String,
    ) -> Result<Vec<OrgEvent>, OrgError> {
        self.require_manager(&actor)?;
        check_name(&name)?;
        if self.teams.contains_key(&team) {
            return Err(OrgError::Exists("team"));
        }
        Ok(vec![OrgEvent::TeamCreated { team, name }])
    }

    pub(super) fn set_team_managers(
        &self,
        actor: PersonId,
        team: Token,
        managers: BTreeSet<PersonId>,
    ) -> Result<Vec<OrgEvent>, OrgError> {
        self.require_manager(&actor)?;
        let current = self.teams.get(&team).ok_or(OrgError::TeamNotFound)?;
        for manager in &managers {
            if !matches!(
                self.active_role(manager),
                Some(Role::Owner | Role::Admin | Role::Manager)
            ) {
                return Err(OrgError::NotAManager);
            }
        }
        if current.managers == managers {
            return Ok(vec![]);
        }
        Ok(vec![OrgEvent::TeamManagersChanged { team, managers }])
    }

    pub(super) fn set_member_team(
        &self,
        actor: PersonId,
        member: PersonId,
        team: Option<Token>,
    ) -> Result<Vec<OrgEvent>, OrgError> {
        self.require_manager(&actor)?;
        let current = self.member(&member)?;
        if let Some(t) = &team
            && !self.teams.contains_key(t)
        {
            return Err(OrgError::TeamNotFound);
        }
        if current.team == team {
            return Ok(vec![]);
        }
        Ok(vec![OrgEvent::MemberTeamChanged { member, team }])
    }

    pub(super) fn create_client(
        &self,
        actor: PersonId,
        client: Token,
        name: String,
    ) -> Result<Vec<OrgEvent>, OrgError> {
        if !matches!(
            self.active_role(&actor),
            Some(Role::Owner | Role::Admin | Role::Manager)
        ) {
            return Err(OrgError::NotAllowed);
        }
        check_name(&name)?;
        if self.clients.contains_key(&client) {
            return Err(OrgError::Exists("client"));
        }
        Ok(vec![OrgEvent::ClientCreated { client, name }])
    }

    pub(super) fn set_attribution_rules(
        &self,
        actor: PersonId,
        rules: Vec<AttributionRule>,
    ) -> Result<Vec<OrgEvent>, OrgError> {
        self.require_manager(&actor)?;
        Attribution::compile(&rules).map_err(|e| OrgError::InvalidAttribution(e.to_string()))?;
        if rules == self.attribution {
            return Ok(vec![]);
        }
        Ok(vec![OrgEvent::AttributionRulesChanged {
            version: self.attribution_version + 1,
            rules,
        }])
    }

    pub(super) fn apply_work(&mut self, event: &OrgEvent) {
        match event {
            OrgEvent::TeamCreated { team, name } => {
                self.teams.insert(
                    team.clone(),
                    Team {
                        name: name.clone(),
                        managers: BTreeSet::new(),
                    },
                );
            }
            OrgEvent::TeamManagersChanged { team, managers } => {
                if let Some(t) = self.teams.get_mut(team) {
                    t.managers.clone_from(managers);
                }
            }
            OrgEvent::MemberTeamChanged { member, team } => {
                if let Some(m) = self.members.get_mut(member) {
                    m.team.clone_from(team);
                }
            }
            OrgEvent::ClientCreated { client, name } => {
                self.clients.insert(client.clone(), name.clone());
            }
            OrgEvent::AttributionRulesChanged { version, rules } => {
                self.attribution_version = *version;
                self.attribution.clone_from(rules);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Aggregate;
    use crate::organization::OrgCommand;
    use crate::testing::AggregateTest;

    fn p(id: &str) -> PersonId {
        Token::new(id).unwrap()
    }

    /// An org with olive (owner), mia (manager), max (manager), ed
    /// (employee), ada (auditor), and the team "core" managed by mia with
    /// ed in it.
    fn org() -> Vec<OrgEvent> {
        let mut events = vec![OrgEvent::OrganizationCreated {
            name: "Acme".into(),
            owner: p("olive"),
            owner_email: crate::PersonalData::new(p("olive"), "olive@acme.test"),
            owner_name: crate::PersonalData::new(p("olive"), "Olive"),
            seats: 10,
        }];
        for (id, role) in [
            ("mia", Role::Manager),
            ("max", Role::Manager),
            ("ed", Role::Employee),
            ("ada", Role::Auditor),
        ] {
            events.push(OrgEvent::MemberInvited {
                member: p(id),
                email: crate::PersonalData::new(p(id), format!("{id}@acme.test")),
                name: None,
                role,
            });
        }
        events.extend([
            OrgEvent::TeamCreated {
                team: p("core"),
                name: "Core".into(),
            },
            OrgEvent::TeamManagersChanged {
                team: p("core"),
                managers: [p("mia")].into(),
            },
            OrgEvent::MemberTeamChanged {
                member: p("ed"),
                team: Some(p("core")),
            },
        ]);
        events
    }

    fn state_of(events: &[OrgEvent]) -> Organization {
        let mut org = Organization::default();
        for e in events {
            org.apply(e);
        }
        org
    }

    fn state() -> Organization {
        state_of(&org())
    }

    #[test]
    fn admins_and_the_members_team_managers_approve_nobody_else() {
        let org = state();
        assert!(org.may_approve(&p("olive"), &p("ed")));
        assert!(org.may_approve(&p("mia"), &p("ed")));
        assert!(
            !org.may_approve(&p("max"), &p("ed")),
            "manages no team of ed"
        );
        assert!(!org.may_approve(&p("ada"), &p("ed")));
        assert!(!org.may_approve(&p("ed"), &p("mia")));
        assert!(!org.may_approve(&p("mia"), &p("max")), "max is in no team");
        assert_eq!(org.managed_members(&p("mia")), [p("ed")].into());
    }

    #[test]
    fn a_deactivated_or_demoted_manager_no_longer_approves() {
        let mut events = org();
        events.push(OrgEvent::MemberRoleChanged {
            member: p("mia"),
            role: Role::Employee,
        });
        let demoted = state_of(&events);
        assert!(!demoted.may_approve(&p("mia"), &p("ed")));
        let mut events = org();
        events.push(OrgEvent::MemberDeactivated { member: p("mia") });
        let gone = state_of(&events);
        assert!(!gone.may_approve(&p("mia"), &p("ed")));
    }

    #[test]
    fn only_owners_and_admins_organize_teams() {
        AggregateTest::<Organization>::given(org())
            .when(OrgCommand::CreateTeam {
                actor: p("mia"),
                team: p("web"),
                name: "Web".into(),
            })
            .then_expect_error(OrgError::NotAllowed);
        AggregateTest::<Organization>::given(org())
            .when(OrgCommand::CreateTeam {
                actor: p("olive"),
                team: p("core"),
                name: "Again".into(),
            })
            .then_expect_error(OrgError::Exists("team"));
        AggregateTest::<Organization>::given(org())
            .when(OrgCommand::CreateTeam {
                actor: p("olive"),
                team: p("web"),
                name: " ".into(),
            })
            .then_expect_error(OrgError::InvalidName);
        AggregateTest::<Organization>::given(org())
            .when(OrgCommand::SetMemberTeam {
                actor: p("olive"),
                member: p("ed"),
                team: Some(p("nope")),
            })
            .then_expect_error(OrgError::TeamNotFound);
        AggregateTest::<Organization>::given(org())
            .when(OrgCommand::SetMemberTeam {
                actor: p("olive"),
                member: p("ed"),
                team: None,
            })
            .then_expect(vec![OrgEvent::MemberTeamChanged {
                member: p("ed"),
                team: None,
            }]);
    }

    #[test]
    fn team_managers_are_active_managers_admins_or_owners() {
        for who in ["ed", "ada", "nobody"] {
            AggregateTest::<Organization>::given(org())
                .when(OrgCommand::SetTeamManagers {
                    actor: p("olive"),
                    team: p("core"),
                    managers: [p("mia"), p(who)].into(),
                })
                .then_expect_error(OrgError::NotAManager);
        }
        AggregateTest::<Organization>::given(org())
            .when(OrgCommand::SetTeamManagers {
                actor: p("olive"),
                team: p("core"),
                managers: [p("mia"), p("olive")].into(),
            })
            .then_expect(vec![OrgEvent::TeamManagersChanged {
                team: p("core"),
                managers: [p("mia"), p("olive")].into(),
            }]);
        // The same managers again change nothing.
        AggregateTest::<Organization>::given(org())
            .when(OrgCommand::SetTeamManagers {
                actor: p("olive"),
                team: p("core"),
                managers: [p("mia")].into(),
            })
            .then_expect(vec![]);
    }

    #[test]
    fn managers_create_clients_employees_do_not() {
        AggregateTest::<Organization>::given(org())
            .when(OrgCommand::CreateClient {
                actor: p("mia"),
                client: p("globex"),
                name: "Globex".into(),
            })
            .then_expect(vec![OrgEvent::ClientCreated {
                client: p("globex"),
                name: "Globex".into(),
            }]);
        for who in ["ed", "ada"] {
            AggregateTest::<Organization>::given(org())
                .when(OrgCommand::CreateClient {
                    actor: p(who),
                    client: p("globex"),
                    name: "Globex".into(),
                })
                .then_expect_error(OrgError::NotAllowed);
        }
    }

    #[test]
    fn attribution_rules_are_versioned_and_checked() {
        let rule = AttributionRule {
            project: p("web"),
            task: None,
            regex: "acme-web".into(),
            ignore_case: false,
        };
        let mut events = org();
        events.push(OrgEvent::AttributionRulesChanged {
            version: 1,
            rules: vec![],
        });
        AggregateTest::<Organization>::given(events)
            .when(OrgCommand::SetAttributionRules {
                actor: p("olive"),
                rules: vec![rule.clone()],
            })
            .then_expect(vec![OrgEvent::AttributionRulesChanged {
                version: 2,
                rules: vec![rule.clone()],
            }]);
        AggregateTest::<Organization>::given(org())
            .when(OrgCommand::SetAttributionRules {
                actor: p("mia"),
                rules: vec![rule.clone()],
            })
            .then_expect_error(OrgError::NotAllowed);
        let bad = AttributionRule {
            regex: "(".into(),
            ..rule
        };
        let refused = state().handle(OrgCommand::SetAttributionRules {
            actor: p("olive"),
            rules: vec![bad],
        });
        assert!(
            matches!(&refused, Err(OrgError::InvalidAttribution(m)) if m.starts_with("rules[0]")),
            "{refused:?}"
        );
    }
}

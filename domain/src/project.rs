//! `Project`: a client's project, its tasks, who may book time on it and its
//! budget. One aggregate per project, its id the project's.
//!
//! Invariants: owners, admins and managers manage projects (the use case
//! passes the actor's role in); names are 1 to 200 characters; task ids
//! are unique; an archived project takes no change but being unarchived; a
//! budget is positive; the budget's 80 % and 100 % marks are each recorded
//! once per crossing: when the time booked (reported by the project-time
//! read model) goes past a mark, and again only after it fell back below.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent, UpcastError, upcast_first_versions};
use crate::ids::{PersonId, Token};
use crate::organization::Role;

/// Longest project or task name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// The largest budget in hours (a century of full-time work).
pub const MAX_BUDGET_HOURS: u32 = 1_000_000;

/// What `ms` of time is worth at `rate_minor` an hour, in minor units, by
/// the one rounding rule of [`crate::money`] (1 minute at 100.00 an hour is
/// 1.67); saturates rather than overflows.
pub fn money_for(ms: i64, rate_minor: i64) -> i64 {
    crate::money::amount_for(ms, rate_minor, 100)
}

/// The marks of a budget that are recorded when crossed, in percent.
pub const BUDGET_MARKS: [u32; 2] = [80, 100];

/// A project's budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Hours, if the project has a budget in hours.
    pub hours: Option<u32>,
    /// Money in the org's currency's minor units, if it has one in money.
    pub money_minor: Option<i64>,
    /// The rate an hour of the project's time is worth, in minor units (what
    /// the budget in money is used at). Absent in events before it existed.
    #[serde(default)]
    pub rate_minor: Option<i64>,
}

/// A project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Whether it was created.
    pub created: bool,
    /// Its name.
    pub name: String,
    /// Its client (one of the org's clients), if it has one.
    pub client: Option<Token>,
    /// Whether its time is billed.
    pub billable: bool,
    /// Its budget.
    pub budget: Budget,
    /// Whether it is archived (it takes no new time).
    pub archived: bool,
    /// Its tasks: id to name.
    pub tasks: BTreeMap<Token, String>,
    /// Who may book time on it; empty: every member.
    pub members: BTreeSet<PersonId>,
    /// The budget marks (percent) crossed and not fallen back below.
    pub marks_crossed: BTreeSet<u32>,
}

/// What may be asked of a project.
#[derive(Debug, Clone, PartialEq)]
pub enum ProjectCommand {
    /// Create it.
    Create {
        /// The actor's role in the org.
        role: Role,
        /// Its name.
        name: String,
        /// Its client (the use case checks the org has it).
        client: Option<Token>,
        /// Whether its time is billed.
        billable: bool,
        /// Its budget.
        budget: Budget,
        /// Who may book on it; empty: every member.
        members: BTreeSet<PersonId>,
    },
    /// Add a task.
    AddTask {
        /// The actor's role in the org.
        role: Role,
        /// The task's id.
        task: Token,
        /// Its name.
        name: String,
    },
    /// Change the budget.
    ChangeBudget {
        /// The actor's role in the org.
        role: Role,
        /// The new budget.
        budget: Budget,
    },
    /// Change who may book on it (empty: every member).
    ChangeMembers {
        /// The actor's role in the org.
        role: Role,
        /// Who may book.
        members: BTreeSet<PersonId>,
    },
    /// Archive it: it takes no new time.
    Archive {
        /// The actor's role in the org.
        role: Role,
    },
    /// Take it out of the archive.
    Unarchive {
        /// The actor's role in the org.
        role: Role,
    },
    /// The hours booked on it now (from the project-time read model): the
    /// budget marks crossed since are recorded.
    RecordBookedTime {
        /// Milliseconds booked in all.
        booked_ms: i64,
    },
}

/// What happened to a project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ProjectEvent {
    /// It was created.
    ProjectCreated {
        /// Its name.
        name: String,
        /// Its client (the use case checks the org has it).
        client: Option<Token>,
        /// Whether its time is billed.
        billable: bool,
        /// Its budget.
        budget: Budget,
        /// Who may book on it.
        members: BTreeSet<PersonId>,
    },
    /// A task was added.
    TaskAdded {
        /// Its id.
        task: Token,
        /// Its name.
        name: String,
    },
    /// The budget changed.
    BudgetChanged {
        /// The new budget.
        budget: Budget,
    },
    /// Who may book changed.
    ProjectMembersChanged {
        /// Who may book; empty: every member.
        members: BTreeSet<PersonId>,
    },
    /// It was archived.
    ProjectArchived,
    /// It was taken out of the archive.
    ProjectUnarchived,
    /// The time booked went past a mark of the budget in hours.
    BudgetMarkCrossed {
        /// The mark, in percent.
        percent: u32,
        /// Milliseconds booked when it was seen.
        booked_ms: i64,
    },
    /// The time booked fell back below a mark (a correction), so its next
    /// crossing is recorded again.
    BudgetMarkCleared {
        /// The mark, in percent.
        percent: u32,
    },
}

impl DomainEvent for ProjectEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::ProjectCreated { .. } => "ProjectCreated",
            Self::TaskAdded { .. } => "TaskAdded",
            Self::BudgetChanged { .. } => "BudgetChanged",
            Self::ProjectMembersChanged { .. } => "ProjectMembersChanged",
            Self::ProjectArchived => "ProjectArchived",
            Self::ProjectUnarchived => "ProjectUnarchived",
            Self::BudgetMarkCrossed { .. } => "BudgetMarkCrossed",
            Self::BudgetMarkCleared { .. } => "BudgetMarkCleared",
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }
}

/// Why a command on a project was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    /// Only owners, admins and managers manage projects.
    #[error("only owners, admins and managers manage projects")]
    NotAllowed,
    /// The project exists.
    #[error("the project exists")]
    Exists,
    /// No such project.
    #[error("no such project")]
    NotFound,
    /// A name is empty or too long.
    #[error("{0} must be 1 to {MAX_NAME_CHARS} characters")]
    InvalidName(&'static str),
    /// A budget or rate is zero, negative, or hours beyond [`MAX_BUDGET_HOURS`].
    #[error("a budget and a rate must be positive, and a budget at most {MAX_BUDGET_HOURS} hours")]
    InvalidBudget,
    /// The task exists.
    #[error("task {0} exists")]
    TaskExists(Token),
    /// The project is archived.
    #[error("the project is archived")]
    Archived,
    /// The project is not archived.
    #[error("the project is not archived")]
    NotArchived,
    /// Booked time cannot be negative.
    #[error("booked time cannot be negative")]
    NegativeTime,
}

fn manages(role: Role) -> Result<(), ProjectError> {
    match role {
        Role::Owner | Role::Admin | Role::Manager => Ok(()),
        Role::Employee | Role::Auditor => Err(ProjectError::NotAllowed),
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), ProjectError> {
    let chars = name.trim().chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ProjectError::InvalidName(what));
    }
    Ok(())
}

fn check_budget(budget: &Budget) -> Result<(), ProjectError> {
    if budget.hours.is_some_and(|h| h == 0 || h > MAX_BUDGET_HOURS)
        || budget.money_minor.is_some_and(|m| m <= 0)
        || budget.rate_minor.is_some_and(|r| r <= 0)
    {
        return Err(ProjectError::InvalidBudget);
    }
    Ok(())
}

impl Project {
    /// Whether `member` may book new time on the project now.
    pub fn bookable_by(&self, member: &PersonId) -> bool {
        self.created && (self.members.is_empty() || self.members.contains(member))
    }

    /// Requires a live project managed by `role`.
    fn change(&self, role: Role) -> Result<(), ProjectError> {
        manages(role)?;
        if !self.created {
            return Err(ProjectError::NotFound);
        }
        if self.archived {
            return Err(ProjectError::Archived);
        }
        Ok(())
    }

    /// The budget marks `booked_ms` is past, under the budget in hours.
    fn marks_past(&self, booked_ms: i64) -> BTreeSet<u32> {
        let Some(hours) = self.budget.hours else {
            return BTreeSet::new();
        };
        let budget_ms = i128::from(hours) * 3_600_000;
        BUDGET_MARKS
            .into_iter()
            .filter(|mark| i128::from(booked_ms) * 100 >= budget_ms * i128::from(*mark))
            .collect()
    }
}

impl Aggregate for Project {
    const TYPE: &'static str = "project";
    type Command = ProjectCommand;
    type Event = ProjectEvent;
    type Error = ProjectError;

    fn handle(&self, command: ProjectCommand) -> Result<Vec<ProjectEvent>, ProjectError> {
        match command {
            ProjectCommand::Create {
                role,
                name,
                client,
                billable,
                budget,
                members,
            } => {
                manages(role)?;
                if self.created {
                    return Err(ProjectError::Exists);
                }
                check_name("the project's name", &name)?;
                check_budget(&budget)?;
                Ok(vec![ProjectEvent::ProjectCreated {
                    name: name.trim().to_owned(),
                    client,
                    billable,
                    budget,
                    members,
                }])
            }
            ProjectCommand::AddTask { role, task, name } => {
                self.change(role)?;
                check_name("the task's name", &name)?;
                if self.tasks.contains_key(&task) {
                    return Err(ProjectError::TaskExists(task));
                }
                Ok(vec![ProjectEvent::TaskAdded {
                    task,
                    name: name.trim().to_owned(),
                }])
            }
            ProjectCommand::ChangeBudget { role, budget } => {
                self.change(role)?;
                check_budget(&budget)?;
                Ok(vec![ProjectEvent::BudgetChanged { budget }])
            }
            ProjectCommand::ChangeMembers { role, members } => {
                self.change(role)?;
                Ok(vec![ProjectEvent::ProjectMembersChanged { members }])
            }
            ProjectCommand::Archive { role } => {
                self.change(role)?;
                Ok(vec![ProjectEvent::ProjectArchived])
            }
            ProjectCommand::Unarchive { role } => {
                manages(role)?;
                if !self.created {
                    return Err(ProjectError::NotFound);
                }
                if !self.archived {
                    return Err(ProjectError::NotArchived);
                }
                Ok(vec![ProjectEvent::ProjectUnarchived])
            }
            ProjectCommand::RecordBookedTime { booked_ms } => {
                if !self.created {
                    return Err(ProjectError::NotFound);
                }
                if booked_ms < 0 {
                    return Err(ProjectError::NegativeTime);
                }
                let past = self.marks_past(booked_ms);
                let mut events: Vec<ProjectEvent> = self
                    .marks_crossed
                    .difference(&past)
                    .map(|&percent| ProjectEvent::BudgetMarkCleared { percent })
                    .collect();
                events.extend(
                    past.difference(&self.marks_crossed)
                        .map(|&percent| ProjectEvent::BudgetMarkCrossed { percent, booked_ms }),
                );
                Ok(events)
            }
        }
    }

    fn apply(&mut self, event: &ProjectEvent) {
        match event {
            ProjectEvent::ProjectCreated {
                name,
                client,
                billable,
                budget,
                members,
            } => {
                self.created = true;
                self.name.clone_from(name);
                self.client.clone_from(client);
                self.billable = *billable;
                self.budget = *budget;
                self.members.clone_from(members);
            }
            ProjectEvent::TaskAdded { task, name } => {
                self.tasks.insert(task.clone(), name.clone());
            }
            ProjectEvent::BudgetChanged { budget } => self.budget = *budget,
            ProjectEvent::ProjectMembersChanged { members } => self.members.clone_from(members),
            ProjectEvent::ProjectArchived => self.archived = true,
            ProjectEvent::ProjectUnarchived => self.archived = false,
            ProjectEvent::BudgetMarkCrossed { percent, .. } => {
                self.marks_crossed.insert(*percent);
            }
            ProjectEvent::BudgetMarkCleared { percent } => {
                self.marks_crossed.remove(percent);
            }
        }
    }

    fn upcast(
        event_type: &str,
        version: u32,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, UpcastError> {
        let types = [
            "ProjectCreated",
            "TaskAdded",
            "BudgetChanged",
            "ProjectMembersChanged",
            "ProjectArchived",
            "ProjectUnarchived",
            "BudgetMarkCrossed",
            "BudgetMarkCleared",
        ];
        upcast_first_versions(Self::TYPE, &types, event_type, version, payload)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn money_rounds_half_up_to_the_minor_unit() {
        // 100.00 an hour: a minute is 166.67 minor units, rounded to 167.
        assert_eq!(money_for(60_000, 10_000), 167);
        assert_eq!(money_for(3_600_000, 10_000), 10_000);
        // Exactly half a minor unit rounds up: 18 s at 1.00 an hour.
        assert_eq!(money_for(18_000, 1), 0);
        assert_eq!(money_for(1_800_000, 1), 1);
        assert_eq!(money_for(0, 10_000), 0);
        assert_eq!(money_for(i64::MAX, i64::MAX), i64::MAX);
    }
    use crate::testing::AggregateTest;

    const H: i64 = 3_600_000;

    fn created(hours: Option<u32>) -> ProjectEvent {
        ProjectEvent::ProjectCreated {
            name: "Apollo".into(),
            client: Some(Token::new("NASA").unwrap()),
            billable: true,
            budget: Budget {
                hours,
                money_minor: None,
                rate_minor: None,
            },
            members: BTreeSet::new(),
        }
    }

    fn create(role: Role, name: &str, budget: Budget) -> ProjectCommand {
        ProjectCommand::Create {
            role,
            name: name.into(),
            client: Some(Token::new("NASA").unwrap()),
            billable: true,
            budget,
            members: BTreeSet::new(),
        }
    }

    fn booked(hours: i64) -> ProjectCommand {
        ProjectCommand::RecordBookedTime {
            booked_ms: hours * H,
        }
    }

    #[test]
    fn owners_admins_and_managers_create_and_manage_projects() {
        let budget = Budget {
            hours: Some(100),
            money_minor: None,
            rate_minor: None,
        };
        for role in [Role::Owner, Role::Admin, Role::Manager] {
            AggregateTest::<Project>::given(vec![])
                .when(create(role, " Apollo ", budget))
                .then_expect(vec![created(Some(100))]);
        }
        for role in [Role::Employee, Role::Auditor] {
            AggregateTest::<Project>::given(vec![])
                .when(create(role, "Apollo", budget))
                .then_expect_error(ProjectError::NotAllowed);
        }
        for (command, error) in [
            (
                create(Role::Owner, " ", budget),
                ProjectError::InvalidName("the project's name"),
            ),
            (
                create(Role::Owner, &"x".repeat(201), budget),
                ProjectError::InvalidName("the project's name"),
            ),
            (
                create(
                    Role::Owner,
                    "Apollo",
                    Budget {
                        hours: Some(0),
                        money_minor: None,
                        rate_minor: None,
                    },
                ),
                ProjectError::InvalidBudget,
            ),
            (
                create(
                    Role::Owner,
                    "Apollo",
                    Budget {
                        hours: None,
                        money_minor: Some(-5),
                        rate_minor: None,
                    },
                ),
                ProjectError::InvalidBudget,
            ),
            (
                create(
                    Role::Owner,
                    "Apollo",
                    Budget {
                        hours: Some(MAX_BUDGET_HOURS + 1),
                        money_minor: None,
                        rate_minor: None,
                    },
                ),
                ProjectError::InvalidBudget,
            ),
        ] {
            AggregateTest::<Project>::given(vec![])
                .when(command)
                .then_expect_error(error);
        }
        AggregateTest::<Project>::given(vec![created(None)])
            .when(create(Role::Owner, "Again", Budget::default()))
            .then_expect_error(ProjectError::Exists);
    }

    #[test]
    fn tasks_are_unique_and_an_archived_project_changes_only_by_unarchiving() {
        let design = Token::new("design").unwrap();
        let add = || ProjectCommand::AddTask {
            role: Role::Manager,
            task: Token::new("design").unwrap(),
            name: "Design".into(),
        };
        AggregateTest::<Project>::given(vec![created(None)])
            .when(add())
            .then_expect(vec![ProjectEvent::TaskAdded {
                task: design.clone(),
                name: "Design".into(),
            }]);
        AggregateTest::<Project>::given(vec![
            created(None),
            ProjectEvent::TaskAdded {
                task: design.clone(),
                name: "Design".into(),
            },
        ])
        .when(add())
        .then_expect_error(ProjectError::TaskExists(design));
        AggregateTest::<Project>::given(vec![created(None), ProjectEvent::ProjectArchived])
            .when(add())
            .then_expect_error(ProjectError::Archived);
        AggregateTest::<Project>::given(vec![created(None), ProjectEvent::ProjectArchived])
            .when(ProjectCommand::Unarchive { role: Role::Admin })
            .then_expect(vec![ProjectEvent::ProjectUnarchived]);
        AggregateTest::<Project>::given(vec![])
            .when(add())
            .then_expect_error(ProjectError::NotFound);
    }

    #[test]
    fn members_may_book_when_listed_or_when_nobody_is() {
        let (erin, ed) = (PersonId::new("erin").unwrap(), PersonId::new("ed").unwrap());
        let mut project = Project::default();
        project.apply(&created(None));
        assert!(project.bookable_by(&erin) && project.bookable_by(&ed));
        project.apply(&ProjectEvent::ProjectMembersChanged {
            members: [erin.clone()].into(),
        });
        assert!(project.bookable_by(&erin) && !project.bookable_by(&ed));
    }

    #[test]
    fn each_budget_mark_is_recorded_once_per_crossing() {
        AggregateTest::<Project>::given(vec![created(Some(100))])
            .when(booked(79))
            .then_expect(vec![]);
        AggregateTest::<Project>::given(vec![created(Some(100))])
            .when(booked(80))
            .then_expect(vec![ProjectEvent::BudgetMarkCrossed {
                percent: 80,
                booked_ms: 80 * H,
            }]);
        // Past both at once: both are recorded.
        AggregateTest::<Project>::given(vec![created(Some(100))])
            .when(booked(120))
            .then_expect(vec![
                ProjectEvent::BudgetMarkCrossed {
                    percent: 80,
                    booked_ms: 120 * H,
                },
                ProjectEvent::BudgetMarkCrossed {
                    percent: 100,
                    booked_ms: 120 * H,
                },
            ]);
        let crossed_80 = ProjectEvent::BudgetMarkCrossed {
            percent: 80,
            booked_ms: 85 * H,
        };
        // Still past it: nothing new.
        AggregateTest::<Project>::given(vec![created(Some(100)), crossed_80.clone()])
            .when(booked(90))
            .then_expect(vec![]);
        // A correction takes it back below: cleared, so the next crossing counts.
        AggregateTest::<Project>::given(vec![created(Some(100)), crossed_80])
            .when(booked(50))
            .then_expect(vec![ProjectEvent::BudgetMarkCleared { percent: 80 }]);
        // No budget in hours: no marks.
        AggregateTest::<Project>::given(vec![created(None)])
            .when(booked(10_000))
            .then_expect(vec![]);
        AggregateTest::<Project>::given(vec![created(Some(100))])
            .when(ProjectCommand::RecordBookedTime { booked_ms: -1 })
            .then_expect_error(ProjectError::NegativeTime);
    }

    proptest! {
        /// Over any sequence of booked totals, a mark is crossed exactly as
        /// many times as the totals go from below it to at or above it.
        #[test]
        fn marks_are_crossed_once_per_rise_past_them(totals in proptest::collection::vec(0i64..200, 1..30)) {
            let mut project = Project::default();
            project.apply(&created(Some(100)));
            let mut crossings: BTreeMap<u32, usize> = BTreeMap::new();
            for total in &totals {
                for event in project.handle(booked(*total)).unwrap() {
                    if let ProjectEvent::BudgetMarkCrossed { percent, .. } = event {
                        *crossings.entry(percent).or_default() += 1;
                    }
                    project.apply(&event);
                }
            }
            for mark in BUDGET_MARKS {
                let threshold = i64::from(mark);
                let mut below = true;
                let mut rises = 0;
                for total in &totals {
                    let above = *total >= threshold;
                    if above && below {
                        rises += 1;
                    }
                    below = !above;
                }
                prop_assert_eq!(crossings.get(&mark).copied().unwrap_or(0), rises);
            }
        }
    }
}

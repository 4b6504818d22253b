//! The organization aggregate: the tenant, its plan's seat count and its members.
//!
//! Invariants: the organization always has at least one active owner; active
//! members never exceed the seats; an e-mail address is unique within the
//! organization (case-insensitive); a member id is used once; only owners and
//! admins manage members, and only owners grant or take the owner role; only
//! active members enroll devices, and deactivating a member revokes their
//! devices in the same commit. Teams, clients and attribution rules (the
//! organization of work) are in [`work`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aggregate::{Aggregate, DomainEvent, UpcastError};
use crate::attribution::AttributionRule;
use crate::categories::CategoryRule;
use crate::classifier::Rules;
use crate::ids::{PersonId, Token};
use crate::personal::PersonalData;

/// The id of an organization's one `Organization` aggregate (the
/// organization itself is the tenant, so its id is the org id).
pub const AGGREGATE_ID: &str = "org";

/// Longest organization name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Longest e-mail address, in bytes.
pub const MAX_EMAIL_LEN: usize = 254;

/// A member's role in the organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns the organization.
    Owner,
    /// Administers members and settings.
    Admin,
    /// Approves their team's timesheets and leave.
    Manager,
    /// Tracks their own time.
    Employee,
    /// Reads everything, changes nothing.
    Auditor,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Admin,
        Role::Manager,
        Role::Employee,
        Role::Auditor,
    ];

    /// Its name as stored and shown (`owner`, `admin`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Employee => "employee",
            Role::Auditor => "auditor",
        }
    }

    /// The role of that name.
    pub fn from_name(name: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// A day of the week (ISO order, Monday first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    /// Every day, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// Its name as stored (`monday`, ...), the same as its serialized form.
    pub fn name(self) -> &'static str {
        match self {
            Weekday::Monday => "monday",
            Weekday::Tuesday => "tuesday",
            Weekday::Wednesday => "wednesday",
            Weekday::Thursday => "thursday",
            Weekday::Friday => "friday",
            Weekday::Saturday => "saturday",
            Weekday::Sunday => "sunday",
        }
    }

    /// The day of that name.
    pub fn from_name(name: &str) -> Option<Weekday> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Longest time-zone name accepted, in bytes (IANA names are far shorter).
pub const MAX_TIMEZONE_LEN: usize = 64;

/// Organization-wide settings: the working calendar and the privacy policy
/// the desktop agent obeys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// IANA time zone the org's days are counted in (e.g. `Europe/Berlin`).
    /// The domain checks its shape; the gateway checks it names a real zone.
    pub timezone: String,
    /// Working days, each at most once, in ISO order.
    pub work_week: Vec<Weekday>,
    /// Whether the agent may capture window titles.
    pub capture_titles: bool,
    /// Whether the agent may capture URLs.
    pub capture_urls: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timezone: "UTC".into(),
            work_week: vec![
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
            ],
            capture_titles: true,
            capture_urls: false,
        }
    }
}

impl Settings {
    fn valid(&self) -> bool {
        let tz_ok = !self.timezone.is_empty()
            && self.timezone.len() <= MAX_TIMEZONE_LEN
            && self
                .timezone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '+' | '-'));
        let week_ok = !self.work_week.is_empty() && self.work_week.windows(2).all(|w| w[0] < w[1]);
        tz_ok && week_ok
    }
}

/// One member as the aggregate knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Contact e-mail (personal data).
    pub email: PersonalData,
    /// Display name (personal data), absent for members invited before names existed.
    pub name: Option<PersonalData>,
    /// Role in the organization.
    pub role: Role,
    /// Whether the member holds a seat.
    pub active: bool,
    /// Their team, if they are in one.
    #[serde(default)]
    pub team: Option<Token>,
}

/// State of one organization.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    /// False until `OrganizationCreated`.
    pub created: bool,
    /// Display name of the organization.
    pub name: String,
    /// Seats bought with the plan.
    pub seats: u32,
    /// Members by person id.
    pub members: BTreeMap<PersonId, Member>,
    /// Devices by device id.
    #[serde(default)]
    pub devices: BTreeMap<Token, Device>,
    /// Calendar and privacy policy.
    #[serde(default)]
    pub settings: Settings,
    /// Version of the classification rules (0: the default rules).
    #[serde(default)]
    pub rules_version: u32,
    /// The classification rules as last set (empty: the default rules).
    #[serde(default)]
    pub rules: Vec<CategoryRule>,
    /// Teams by id.
    #[serde(default)]
    pub teams: BTreeMap<Token, Team>,
    /// Clients by id: their names.
    #[serde(default)]
    pub clients: BTreeMap<Token, String>,
    /// Version of the attribution rules (0: none set).
    #[serde(default)]
    pub attribution_version: u32,
    /// The attribution rules as last set.
    #[serde(default)]
    pub attribution: Vec<AttributionRule>,
}

/// A device enrolled by a member (the desktop agent's machine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The member it belongs to.
    pub member: PersonId,
    /// Its display name (personal data of the member).
    pub name: PersonalData,
    /// Whether it was revoked; a revoked device stays revoked.
    pub revoked: bool,
}

impl Organization {
    /// Members currently holding a seat.
    pub fn active_members(&self) -> usize {
        self.members.values().filter(|m| m.active).count()
    }

    /// Active members with the owner role.
    pub fn active_owners(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.active && m.role == Role::Owner)
            .count()
    }

    /// Whether `actor` may invite (or send the invitation of) a member with
    /// `role`: owners and admins may, and only owners grant the owner role.
    pub fn check_invite(&self, actor: &PersonId, role: Role) -> Result<(), OrgError> {
        let actor_role = self.require_manager(actor)?;
        if role == Role::Owner && actor_role != Role::Owner {
            return Err(OrgError::NotAllowed);
        }
        Ok(())
    }

    /// The actor's role, if they are an active member.
    pub fn active_role(&self, actor: &PersonId) -> Option<Role> {
        self.members.get(actor).filter(|m| m.active).map(|m| m.role)
    }

    /// Requires the actor to be an active owner or admin; returns their role.
    fn require_manager(&self, actor: &PersonId) -> Result<Role, OrgError> {
        match self.active_role(actor) {
            Some(role @ (Role::Owner | Role::Admin)) => Ok(role),
            _ => Err(OrgError::NotAllowed),
        }
    }

    fn member(&self, member: &PersonId) -> Result<&Member, OrgError> {
        self.members.get(member).ok_or(OrgError::NotAMember)
    }

    fn email_taken(&self, email: &str) -> bool {
        self.members
            .values()
            .filter_map(|m| m.email.value())
            .any(|e| e.eq_ignore_ascii_case(email))
    }
}

/// Commands on an organization.
#[derive(Debug, Clone, PartialEq)]
pub enum OrgCommand {
    /// Create the organization with its first owner.
    Create {
        /// Display name.
        name: String,
        /// The owner's person id.
        owner: PersonId,
        /// The owner's e-mail.
        owner_email: String,
        /// The owner's display name.
        owner_name: String,
        /// Seats bought.
        seats: u32,
    },
    /// Invite a member, taking a seat (owners and admins).
    InviteMember {
        /// Who invites.
        actor: PersonId,
        /// New member's person id.
        member: PersonId,
        /// New member's e-mail.
        email: String,
        /// New member's display name.
        name: String,
        /// Role granted.
        role: Role,
    },
    /// Change the number of seats bought (owners and admins).
    ChangeSeats {
        /// Who changes it.
        actor: PersonId,
        /// New seat count.
        seats: u32,
    },
    /// Give a member another role (owners and admins; only owners grant or
    /// take the owner role).
    ChangeRole {
        /// Who changes it.
        actor: PersonId,
        /// Whose role.
        member: PersonId,
        /// The new role.
        role: Role,
    },
    /// Take a member's seat and revoke their devices (owners and admins).
    Deactivate {
        /// Who deactivates.
        actor: PersonId,
        /// Whom.
        member: PersonId,
    },
    /// Give a deactivated member a seat again (owners and admins).
    Reactivate {
        /// Who reactivates.
        actor: PersonId,
        /// Whom.
        member: PersonId,
    },
    /// Replace the organization's settings (owners and admins).
    ChangeSettings {
        /// Who changes them.
        actor: PersonId,
        /// The new settings.
        settings: Settings,
    },
    /// Replace the classification rules (owners and admins).
    SetCategoryRules {
        /// Who sets them.
        actor: PersonId,
        /// The new rules; empty means the default rules.
        rules: Vec<CategoryRule>,
    },
    /// Enroll a device for the acting member (auditors change nothing, so
    /// they enroll none).
    EnrollDevice {
        /// The member enrolling their own device.
        actor: PersonId,
        /// New device id.
        device: Token,
        /// Its display name.
        name: String,
    },
    /// Revoke a device (its member, or owners and admins).
    RevokeDevice {
        /// Who revokes.
        actor: PersonId,
        /// Which device.
        device: Token,
    },
    /// Create a team (owners and admins).
    CreateTeam {
        /// Who creates it.
        actor: PersonId,
        /// Its id.
        team: Token,
        /// Its name.
        name: String,
    },
    /// Set a team's managers (owners and admins): active owners, admins or
    /// managers, who then decide on the team's timesheets.
    SetTeamManagers {
        /// Who sets them.
        actor: PersonId,
        /// The team.
        team: Token,
        /// Its managers (may be empty).
        managers: BTreeSet<PersonId>,
    },
    /// Put a member in a team, or in none (owners and admins).
    SetMemberTeam {
        /// Who sets it.
        actor: PersonId,
        /// The member.
        member: PersonId,
        /// The team; `None`: no team.
        team: Option<Token>,
    },
    /// Create a client (owners, admins and managers).
    CreateClient {
        /// Who creates it.
        actor: PersonId,
        /// Its id.
        client: Token,
        /// Its name.
        name: String,
    },
    /// Replace the attribution rules (owners and admins); the use case has
    /// checked that the projects and tasks they name exist.
    SetAttributionRules {
        /// Who sets them.
        actor: PersonId,
        /// The new rules, first match first.
        rules: Vec<AttributionRule>,
    },
}

/// Events of an organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrgEvent {
    /// The organization exists, with its first owner holding a seat.
    OrganizationCreated {
        /// Display name.
        name: String,
        /// First owner.
        owner: PersonId,
        /// Owner's e-mail (personal data).
        owner_email: PersonalData,
        /// Owner's display name (personal data).
        owner_name: PersonalData,
        /// Seats bought.
        seats: u32,
    },
    /// A member was invited and holds a seat. Schema v2 added `name` and `role`
    /// (v1 members were employees without a recorded name).
    MemberInvited {
        /// The member.
        member: PersonId,
        /// Their e-mail (personal data).
        email: PersonalData,
        /// Their display name (personal data).
        name: Option<PersonalData>,
        /// Role granted.
        role: Role,
    },
    /// The seat count changed.
    SeatsChanged {
        /// New seat count.
        seats: u32,
    },
    /// A member's role changed.
    MemberRoleChanged {
        /// The member.
        member: PersonId,
        /// The new role.
        role: Role,
    },
    /// A member lost their seat.
    MemberDeactivated {
        /// The member.
        member: PersonId,
    },
    /// A member holds a seat again.
    MemberReactivated {
        /// The member.
        member: PersonId,
    },
    /// The settings changed (all of them are recorded, not a diff).
    SettingsChanged {
        /// The new settings.
        settings: Settings,
    },
    /// The classification rules changed.
    CategoryRulesChanged {
        /// The new rules version (1, 2, ...).
        version: u32,
        /// The rules; empty means the default rules.
        rules: Vec<CategoryRule>,
    },
    /// A member enrolled a device.
    DeviceEnrolled {
        /// The device.
        device: Token,
        /// Its member.
        member: PersonId,
        /// Its display name (personal data of the member).
        name: PersonalData,
    },
    /// A device was revoked and may no longer upload.
    DeviceRevoked {
        /// The device.
        device: Token,
    },
    /// A team was created.
    TeamCreated {
        /// Its id.
        team: Token,
        /// Its name.
        name: String,
    },
    /// A team's managers were set.
    TeamManagersChanged {
        /// The team.
        team: Token,
        /// Its managers.
        managers: BTreeSet<PersonId>,
    },
    /// A member moved to a team, or out of every team.
    MemberTeamChanged {
        /// The member.
        member: PersonId,
        /// The team, if any.
        team: Option<Token>,
    },
    /// A client was created.
    ClientCreated {
        /// Its id.
        client: Token,
        /// Its name.
        name: String,
    },
    /// The attribution rules changed.
    AttributionRulesChanged {
        /// The new version (1, 2, ...).
        version: u32,
        /// The rules, first match first.
        rules: Vec<AttributionRule>,
    },
}

impl DomainEvent for OrgEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::OrganizationCreated { .. } => "OrganizationCreated",
            Self::MemberInvited { .. } => "MemberInvited",
            Self::SeatsChanged { .. } => "SeatsChanged",
            Self::MemberRoleChanged { .. } => "MemberRoleChanged",
            Self::MemberDeactivated { .. } => "MemberDeactivated",
            Self::MemberReactivated { .. } => "MemberReactivated",
            Self::SettingsChanged { .. } => "SettingsChanged",
            Self::CategoryRulesChanged { .. } => "CategoryRulesChanged",
            Self::DeviceEnrolled { .. } => "DeviceEnrolled",
            Self::DeviceRevoked { .. } => "DeviceRevoked",
            Self::TeamCreated { .. } => "TeamCreated",
            Self::TeamManagersChanged { .. } => "TeamManagersChanged",
            Self::MemberTeamChanged { .. } => "MemberTeamChanged",
            Self::ClientCreated { .. } => "ClientCreated",
            Self::AttributionRulesChanged { .. } => "AttributionRulesChanged",
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            Self::MemberInvited { .. } => 2,
            Self::OrganizationCreated { .. }
            | Self::SeatsChanged { .. }
            | Self::MemberRoleChanged { .. }
            | Self::MemberDeactivated { .. }
            | Self::MemberReactivated { .. }
            | Self::SettingsChanged { .. }
            | Self::CategoryRulesChanged { .. }
            | Self::DeviceEnrolled { .. }
            | Self::DeviceRevoked { .. }
            | Self::TeamCreated { .. }
            | Self::TeamManagersChanged { .. }
            | Self::MemberTeamChanged { .. }
            | Self::ClientCreated { .. }
            | Self::AttributionRulesChanged { .. } => 1,
        }
    }
}

/// Why an organization command was denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    /// Create on an existing organization.
    #[error("the organization already exists")]
    AlreadyExists,
    /// Any command before create.
    #[error("the organization does not exist")]
    NotFound,
    /// Name empty or too long.
    #[error("name must be 1 to {MAX_NAME_CHARS} characters")]
    InvalidName,
    /// Seat count of zero.
    #[error("an organization needs at least one seat")]
    NoSeats,
    /// No free seat for an invitation.
    #[error("all {seats} seats are taken; buy more seats or deactivate a member")]
    SeatsExhausted {
        /// Seats bought.
        seats: u32,
    },
    /// Fewer seats than active members.
    #[error("{active} members are active, so seats cannot drop to {requested}")]
    SeatsBelowActive {
        /// Active members.
        active: usize,
        /// Requested seats.
        requested: u32,
    },
    /// The person is already a member.
    #[error("this person is already a member")]
    AlreadyMember,
    /// The e-mail belongs to another member.
    #[error("another member already uses this e-mail address")]
    EmailTaken,
    /// Malformed e-mail.
    #[error("invalid e-mail address")]
    InvalidEmail,
    /// The actor lacks the role for this.
    #[error("you are not allowed to do this in this organization")]
    NotAllowed,
    /// The person is not a member.
    #[error("this person is not a member of the organization")]
    NotAMember,
    /// The member is deactivated.
    #[error("this member is deactivated")]
    MemberInactive,
    /// The member is already active.
    #[error("this member is already active")]
    MemberActive,
    /// The change would leave the organization without an active owner.
    #[error("the organization must keep at least one active owner")]
    LastOwner,
    /// Settings with an empty or malformed time zone or work week.
    #[error(
        "settings need a time zone name and at least one working day, each day once, Monday first"
    )]
    InvalidSettings,
    /// Malformed classification rules.
    #[error("invalid classification rules: {0}")]
    InvalidRules(String),
    /// The device id is taken.
    #[error("a device with this id is already enrolled")]
    DeviceExists,
    /// No such device.
    #[error("no such device in this organization")]
    DeviceNotFound,
    /// The device was revoked before.
    #[error("this device is already revoked")]
    DeviceRevoked,
    /// A team or client with this id exists.
    #[error("a {0} with this id already exists")]
    Exists(&'static str),
    /// No such team.
    #[error("no such team in this organization")]
    TeamNotFound,
    /// A team manager who is not an active owner, admin or manager.
    #[error("team managers must be active owners, admins or managers")]
    NotAManager,
    /// Malformed attribution rules.
    #[error("invalid attribution rules: {0}")]
    InvalidAttribution(String),
}

/// Whether `email` is an e-mail address the organization accepts: the one
/// rule, used by the aggregate and by the gateway's input checks.
pub fn valid_email(email: &str) -> bool {
    email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
}

fn valid_name(name: &str) -> bool {
    let n = name.trim().chars().count();
    n > 0 && n <= MAX_NAME_CHARS
}

impl Organization {
    fn change_role(
        &self,
        actor: PersonId,
        member: PersonId,
        role: Role,
    ) -> Result<Vec<OrgEvent>, OrgError> {
        let actor_role = self.require_manager(&actor)?;
        let target = self.member(&member)?;
        if (target.role == Role::Owner || role == Role::Owner) && actor_role != Role::Owner {
            return Err(OrgError::NotAllowed);
        }
        if target.role == role {
            return Ok(vec![]);
        }
        if target.active && target.role == Role::Owner && self.active_owners() == 1 {
            return Err(OrgError::LastOwner);
        }
        Ok(vec![OrgEvent::MemberRoleChanged { member, role }])
    }

    fn deactivate(&self, actor: PersonId, member: PersonId) -> Result<Vec<OrgEvent>, OrgError> {
        let actor_role = self.require_manager(&actor)?;
        let target = self.member(&member)?;
        if !target.active {
            return Err(OrgError::MemberInactive);
        }
        if target.role == Role::Owner && actor_role != Role::Owner {
            return Err(OrgError::NotAllowed);
        }
        if target.role == Role::Owner && self.active_owners() == 1 {
            return Err(OrgError::LastOwner);
        }
        let revoked = self
            .devices
            .iter()
            .filter(|(_, d)| d.member == member && !d.revoked)
            .map(|(device, _)| OrgEvent::DeviceRevoked {
                device: device.clone(),
            });
        let mut events = vec![OrgEvent::MemberDeactivated {
            member: member.clone(),
        }];
        events.extend(revoked);
        Ok(events)
    }

    fn reactivate(&self, actor: PersonId, member: PersonId) -> Result<Vec<OrgEvent>, OrgError> {
        self.require_manager(&actor)?;
        if self.member(&member)?.active {
            return Err(OrgError::MemberActive);
        }
        if self.active_members() >= self.seats as usize {
            return Err(OrgError::SeatsExhausted { seats: self.seats });
        }
        Ok(vec![OrgEvent::MemberReactivated { member }])
    }

    fn change_settings(
        &self,
        actor: PersonId,
        settings: Settings,
    ) -> Result<Vec<OrgEvent>, OrgError> {
        self.require_manager(&actor)?;
        if !settings.valid() {
            return Err(OrgError::InvalidSettings);
        }
        if settings == self.settings {
            return Ok(vec![]);
        }
        Ok(vec![OrgEvent::SettingsChanged { settings }])
    }

    /// Whether `actor` may enroll a device: any active member but an
    /// auditor.
    pub fn check_enroll(&self, actor: &PersonId) -> Result<(), OrgError> {
        match self.active_role(actor) {
            None if self.members.contains_key(actor) => Err(OrgError::MemberInactive),
            None => Err(OrgError::NotAMember),
            Some(Role::Auditor) => Err(OrgError::NotAllowed),
            Some(_) => Ok(()),
        }
    }

    fn enroll_device(
        &self,
        actor: PersonId,
        device: Token,
        name: String,
    ) -> Result<Vec<OrgEvent>, OrgError> {
        self.check_enroll(&actor)?;
        if !valid_name(&name) {
            return Err(OrgError::InvalidName);
        }
        if self.devices.contains_key(&device) {
            return Err(OrgError::DeviceExists);
        }
        Ok(vec![OrgEvent::DeviceEnrolled {
            device,
            name: PersonalData::new(actor.clone(), name),
            member: actor,
        }])
    }

    fn revoke_device(&self, actor: PersonId, device: Token) -> Result<Vec<OrgEvent>, OrgError> {
        let found = self.devices.get(&device).ok_or(OrgError::DeviceNotFound)?;
        let own = found.member == actor && self.active_role(&actor).is_some();
        if !own {
            self.require_manager(&actor)?;
        }
        if found.revoked {
            return Err(OrgError::DeviceRevoked);
        }
        Ok(vec![OrgEvent::DeviceRevoked { device }])
    }
}

impl Aggregate for Organization {
    const TYPE: &'static str = "organization";
    type Command = OrgCommand;
    type Event = OrgEvent;
    type Error = OrgError;

    fn handle(&self, command: OrgCommand) -> Result<Vec<OrgEvent>, OrgError> {
        match command {
            OrgCommand::Create {
                name,
                owner,
                owner_email,
                owner_name,
                seats,
            } => {
                if self.created {
                    return Err(OrgError::AlreadyExists);
                }
                if !valid_name(&name) || !valid_name(&owner_name) {
                    return Err(OrgError::InvalidName);
                }
                if !valid_email(&owner_email) {
                    return Err(OrgError::InvalidEmail);
                }
                if seats == 0 {
                    return Err(OrgError::NoSeats);
                }
                Ok(vec![OrgEvent::OrganizationCreated {
                    name,
                    owner_email: PersonalData::new(owner.clone(), owner_email),
                    owner_name: PersonalData::new(owner.clone(), owner_name),
                    owner,
                    seats,
                }])
            }
            OrgCommand::InviteMember {
                actor,
                member,
                email,
                name,
                role,
            } => {
                if !self.created {
                    return Err(OrgError::NotFound);
                }
                self.check_invite(&actor, role)?;
                if !valid_name(&name) {
                    return Err(OrgError::InvalidName);
                }
                if !valid_email(&email) {
                    return Err(OrgError::InvalidEmail);
                }
                if self.members.contains_key(&member) {
                    return Err(OrgError::AlreadyMember);
                }
                if self.email_taken(&email) {
                    return Err(OrgError::EmailTaken);
                }
                if self.active_members() >= self.seats as usize {
                    return Err(OrgError::SeatsExhausted { seats: self.seats });
                }
                Ok(vec![OrgEvent::MemberInvited {
                    email: PersonalData::new(member.clone(), email),
                    name: Some(PersonalData::new(member.clone(), name)),
                    member,
                    role,
                }])
            }
            OrgCommand::ChangeSeats { actor, seats } => {
                if !self.created {
                    return Err(OrgError::NotFound);
                }
                self.require_manager(&actor)?;
                if seats == 0 {
                    return Err(OrgError::NoSeats);
                }
                let active = self.active_members();
                if (seats as usize) < active {
                    return Err(OrgError::SeatsBelowActive {
                        active,
                        requested: seats,
                    });
                }
                if seats == self.seats {
                    return Ok(vec![]);
                }
                Ok(vec![OrgEvent::SeatsChanged { seats }])
            }
            _ if !self.created => Err(OrgError::NotFound),
            OrgCommand::ChangeRole {
                actor,
                member,
                role,
            } => self.change_role(actor, member, role),
            OrgCommand::Deactivate { actor, member } => self.deactivate(actor, member),
            OrgCommand::Reactivate { actor, member } => self.reactivate(actor, member),
            OrgCommand::EnrollDevice {
                actor,
                device,
                name,
            } => self.enroll_device(actor, device, name),
            OrgCommand::RevokeDevice { actor, device } => self.revoke_device(actor, device),
            OrgCommand::ChangeSettings { actor, settings } => self.change_settings(actor, settings),
            OrgCommand::CreateTeam { actor, team, name } => self.create_team(actor, team, name),
            OrgCommand::SetTeamManagers {
                actor,
                team,
                managers,
            } => self.set_team_managers(actor, team, managers),
            OrgCommand::SetMemberTeam {
                actor,
                member,
                team,
            } => self.set_member_team(actor, member, team),
            OrgCommand::CreateClient {
                actor,
                client,
                name,
            } => self.create_client(actor, client, name),
            OrgCommand::SetAttributionRules { actor, rules } => {
                self.set_attribution_rules(actor, rules)
            }
            OrgCommand::SetCategoryRules { actor, rules } => {
                self.require_manager(&actor)?;
                if let Err(problem) = Rules::compile(&rules) {
                    return Err(OrgError::InvalidRules(problem.to_string()));
                }
                Ok(vec![OrgEvent::CategoryRulesChanged {
                    version: self.rules_version + 1,
                    rules,
                }])
            }
        }
    }

    fn apply(&mut self, event: &OrgEvent) {
        match event {
            OrgEvent::OrganizationCreated {
                name,
                owner,
                owner_email,
                owner_name,
                seats,
            } => {
                self.created = true;
                self.name.clone_from(name);
                self.seats = *seats;
                self.members.insert(
                    owner.clone(),
                    Member {
                        email: owner_email.clone(),
                        name: Some(owner_name.clone()),
                        role: Role::Owner,
                        active: true,
                        team: None,
                    },
                );
            }
            OrgEvent::MemberInvited {
                member,
                email,
                name,
                role,
            } => {
                self.members.insert(
                    member.clone(),
                    Member {
                        email: email.clone(),
                        name: name.clone(),
                        role: *role,
                        active: true,
                        team: None,
                    },
                );
            }
            OrgEvent::SeatsChanged { seats } => self.seats = *seats,
            OrgEvent::MemberRoleChanged { member, role } => {
                if let Some(m) = self.members.get_mut(member) {
                    m.role = *role;
                }
            }
            OrgEvent::MemberDeactivated { member } => {
                if let Some(m) = self.members.get_mut(member) {
                    m.active = false;
                }
            }
            OrgEvent::MemberReactivated { member } => {
                if let Some(m) = self.members.get_mut(member) {
                    m.active = true;
                }
            }
            OrgEvent::DeviceEnrolled {
                device,
                member,
                name,
            } => {
                self.devices.insert(
                    device.clone(),
                    Device {
                        member: member.clone(),
                        name: name.clone(),
                        revoked: false,
                    },
                );
            }
            OrgEvent::DeviceRevoked { device } => {
                if let Some(d) = self.devices.get_mut(device) {
                    d.revoked = true;
                }
            }
            OrgEvent::SettingsChanged { settings } => self.settings.clone_from(settings),
            OrgEvent::CategoryRulesChanged { version, rules } => {
                self.rules_version = *version;
                self.rules.clone_from(rules);
            }
            OrgEvent::TeamCreated { .. }
            | OrgEvent::TeamManagersChanged { .. }
            | OrgEvent::MemberTeamChanged { .. }
            | OrgEvent::ClientCreated { .. }
            | OrgEvent::AttributionRulesChanged { .. } => self.apply_work(event),
        }
    }

    fn upcast(event_type: &str, version: u32, payload: Value) -> Result<Value, UpcastError> {
        let malformed = |reason: &str| UpcastError::Malformed {
            event_type: event_type.to_owned(),
            version,
            reason: reason.to_owned(),
        };
        match (event_type, version) {
            ("OrganizationCreated", 1)
            | ("SeatsChanged", 1)
            | ("MemberInvited", 2)
            | ("MemberRoleChanged", 1)
            | ("MemberDeactivated", 1)
            | ("MemberReactivated", 1)
            | ("SettingsChanged", 1)
            | ("CategoryRulesChanged", 1)
            | ("DeviceEnrolled", 1)
            | ("DeviceRevoked", 1)
            | ("TeamCreated", 1)
            | ("TeamManagersChanged", 1)
            | ("MemberTeamChanged", 1)
            | ("ClientCreated", 1)
            | ("AttributionRulesChanged", 1) => Ok(payload),
            // v1 had neither a name nor a role: every invitee was an employee.
            ("MemberInvited", 1) => {
                let Value::Object(mut fields) = payload else {
                    return Err(malformed("payload is not an object"));
                };
                if !fields.contains_key("member") || !fields.contains_key("email") {
                    return Err(malformed("missing member or email"));
                }
                fields.insert("name".into(), Value::Null);
                fields.insert("role".into(), Value::String("employee".into()));
                Ok(Value::Object(fields))
            }
            (
                "OrganizationCreated"
                | "SeatsChanged"
                | "MemberInvited"
                | "MemberRoleChanged"
                | "MemberDeactivated"
                | "MemberReactivated"
                | "SettingsChanged"
                | "CategoryRulesChanged"
                | "DeviceEnrolled"
                | "DeviceRevoked"
                | "TeamCreated"
                | "TeamManagersChanged"
                | "MemberTeamChanged"
                | "ClientCreated"
                | "AttributionRulesChanged",
                _,
            ) => Err(UpcastError::UnknownVersion {
                event_type: event_type.to_owned(),
                version,
            }),
            _ => Err(UpcastError::UnknownType {
                aggregate_type: Self::TYPE,
                event_type: event_type.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
pub mod work;

pub use work::Team;

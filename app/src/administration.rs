//! Administration of an organization: each command together with its side
//! effects in the credential store (an invitation token for an invite, a
//! device token for an enrollment, revoked tokens for a deactivation or a
//! revocation), and the directory's queries with their permissions.
//!
//! A replayed command id returns the stored result, and a secret is handed
//! out with it only after the caller's permission is checked again on the
//! organization's current state: a demoted admin who replays an old invite
//! gets no fresh invitation token.

use std::sync::Arc;

use trackhrs_credentials::{Auth, AuthError};
use trackhrs_domain::Token;
use trackhrs_domain::organization::{OrgCommand, Organization, Role};
use trackhrs_domain::permissions::{Read, Scope};
pub use trackhrs_projections::directory::{
    DeviceRow, Listed, MAX_PAGE as MAX_LIST_PAGE, MemberRow, OrgRow, PageOf,
};
pub use trackhrs_projections::history::{
    Entry as HistoryEntry, Filter as HistoryFilter, MAX_PAGE as MAX_HISTORY_PAGE, Page,
};
use trackhrs_projections::{directory, history};

use crate::caller::Caller;
use crate::error::AppError;
use crate::org::{OrgCommands, Outcome, derived_id};
use crate::reads::{ReadModels, role_in, scope_of};

/// A read answer with the stream position it reflects.
#[derive(Debug, Clone, PartialEq)]
pub struct AtPosition<T> {
    /// The answer.
    pub value: T,
    /// The stream position the read model had applied.
    pub position: u64,
}

/// A member as the directory shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The directory's row.
    pub row: MemberRow,
    /// Invited but not accepted yet (no account).
    pub invitation_pending: bool,
}

/// An invitation handed out. Its `Debug` hides the token.
pub struct Invitation {
    /// The command's outcome (for a resend: nothing recorded, position 0).
    pub outcome: Outcome,
    /// The invited member.
    pub person: Token,
    /// The single-use invitation token.
    pub token: String,
    /// Unix seconds when it expires.
    pub expires_at: i64,
}

impl std::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitation")
            .field("outcome", &self.outcome)
            .field("person", &self.person)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An enrolled device and its token. Its `Debug` hides the token.
pub struct Enrolled {
    /// The command's outcome.
    pub outcome: Outcome,
    /// The new device.
    pub device: Token,
    /// Its token (shown once).
    pub token: String,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("outcome", &self.outcome)
            .field("device", &self.device)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A member to invite (checked by the adapter).
#[derive(Debug, Clone)]
pub struct NewMember {
    /// Their e-mail address.
    pub email: String,
    /// Their display name.
    pub name: String,
    /// The role granted.
    pub role: Role,
}

/// The administration use cases.
#[derive(Clone)]
pub struct Administration {
    credentials: Arc<Auth>,
    orgs: OrgCommands,
    reads: ReadModels,
}

impl Administration {
    pub(crate) fn new(credentials: Arc<Auth>, orgs: OrgCommands, reads: ReadModels) -> Self {
        Self {
            credentials,
            orgs,
            reads,
        }
    }

    /// Runs a command of the caller on their org.
    async fn command(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        command: OrgCommand,
    ) -> Result<(Token, Outcome), AppError> {
        let org = caller.scope(org_id)?;
        let outcome = self
            .orgs
            .execute(&org, &caller.actor(), command_id, command)
            .await?;
        Ok((org, outcome))
    }

    /// Runs a command that has no side effect beyond its events (settings,
    /// seats, a role, a reactivation), made by `command` from the caller's
    /// person id; the aggregate decides whether the caller may.
    #[tracing::instrument(skip_all)]
    pub async fn execute(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        command: impl FnOnce(Token) -> OrgCommand,
    ) -> Result<Outcome, AppError> {
        let command = command(caller.person.clone());
        Ok(self.command(caller, org_id, command_id, command).await?.1)
    }

    /// Invites a member and hands out their invitation token.
    #[tracing::instrument(skip_all)]
    pub async fn invite(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        new: NewMember,
    ) -> Result<Invitation, AppError> {
        let org = caller.scope(org_id)?;
        let member = derived_id("p", &org, "invite", command_id);
        let role = new.role;
        let command = OrgCommand::InviteMember {
            actor: caller.person.clone(),
            member: member.clone(),
            email: new.email.clone(),
            name: new.name,
            role,
        };
        let (org, outcome) = self.command(caller, org_id, command_id, command).await?;
        let mut email = new.email;
        if outcome.duplicate {
            // The stored result of an earlier request: the caller must still
            // be allowed to invite this member before a new token is made,
            // and the member's data must not have been erased since.
            let state = self.orgs.state(&org).await?;
            self.may_send_invitation(&state, caller, &member)?;
            email = state
                .members
                .get(&member)
                .and_then(|m| m.email.value())
                .ok_or_else(|| AppError::precondition("this member's data was erased"))?
                .to_owned();
        }
        let (token, expires_at) = self
            .credentials
            .put_invitation(org.as_str(), member.as_str(), &email)
            .await?;
        Ok(Invitation {
            outcome,
            person: member,
            token,
            expires_at,
        })
    }

    /// Whether the caller may send `member`'s invitation now: the aggregate's
    /// invite rule for the member's current role, and the member active.
    fn may_send_invitation(
        &self,
        state: &Organization,
        caller: &Caller,
        member: &Token,
    ) -> Result<(), AppError> {
        let found = state.members.get(member);
        let role = found.map_or(Role::Employee, |m| m.role);
        state.check_invite(&caller.person, role)?;
        match found {
            Some(m) if m.active => Ok(()),
            _ => Err(AppError::precondition("no active member with this id")),
        }
    }

    /// Sends a member's invitation again (a new token; the old one stops
    /// working), on the organization's current state.
    #[tracing::instrument(skip_all)]
    pub async fn resend_invitation(
        &self,
        caller: &Caller,
        org_id: &str,
        person: Token,
    ) -> Result<Invitation, AppError> {
        let org = caller.scope(org_id)?;
        let state = self.orgs.state(&org).await?;
        self.may_send_invitation(&state, caller, &person)?;
        if self
            .credentials
            .has_account(org.as_str(), person.as_str())
            .await?
        {
            return Err(AppError::precondition(
                "this member accepted their invitation already",
            ));
        }
        let email = state
            .members
            .get(&person)
            .and_then(|m| m.email.value())
            .ok_or_else(|| AppError::precondition("this member's data was erased"))?;
        let (token, expires_at) = self
            .credentials
            .put_invitation(org.as_str(), person.as_str(), email)
            .await?;
        Ok(Invitation {
            outcome: Outcome {
                version: 0,
                position: 0,
                duplicate: false,
            },
            person,
            token,
            expires_at,
        })
    }

    /// Deactivates a member: the aggregate revokes their devices in the same
    /// commit, and their tokens stop working now, on every replica. A crash
    /// between the commit and the revocation is repaired by the retry or by
    /// the revocation policy, which follows the log.
    #[tracing::instrument(skip_all)]
    pub async fn deactivate(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        member: Token,
    ) -> Result<Outcome, AppError> {
        let command = OrgCommand::Deactivate {
            actor: caller.person.clone(),
            member: member.clone(),
        };
        let (org, outcome) = self.command(caller, org_id, command_id, command).await?;
        // A retry (after a lost acknowledgement, say) revokes again only
        // while the member is still inactive: everything issued after a
        // reactivation stays.
        let inactive = !outcome.duplicate
            || self
                .orgs
                .state(&org)
                .await?
                .members
                .get(&member)
                .is_some_and(|m| !m.active);
        if inactive {
            self.credentials
                .revoke_person(org.as_str(), member.as_str())
                .await?;
        }
        Ok(outcome)
    }

    /// Enrolls a device of the caller and hands out its token.
    #[tracing::instrument(skip_all)]
    pub async fn enroll_device(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        name: String,
    ) -> Result<Enrolled, AppError> {
        let org = caller.scope(org_id)?;
        let device = derived_id("d", &org, "device", command_id);
        let command = OrgCommand::EnrollDevice {
            actor: caller.person.clone(),
            device: device.clone(),
            name,
        };
        let (org, outcome) = self.command(caller, org_id, command_id, command).await?;
        let revoked = || AppError::precondition("this device was revoked");
        let token = match self
            .credentials
            .put_device_token(org.as_str(), device.as_str(), caller.person.as_str())
            .await
        {
            Ok(token) => token,
            Err(AuthError::Revoked) => return Err(revoked()),
            Err(e) => return Err(e.into()),
        };
        // A deactivation may have revoked the device between the command and
        // the token, or the caller may no longer enroll devices (a replay of
        // an old command): then the token must not live.
        let state = self.orgs.state(&org).await?;
        let standing = state.devices.get(&device).is_some_and(|d| !d.revoked)
            && state.check_enroll(&caller.person).is_ok();
        if !standing {
            self.credentials
                .revoke_device(org.as_str(), device.as_str())
                .await?;
            return Err(revoked());
        }
        Ok(Enrolled {
            outcome,
            device,
            token,
        })
    }

    /// Revokes a device; its token stops working now.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_device(
        &self,
        caller: &Caller,
        org_id: &str,
        command_id: &str,
        device: Token,
    ) -> Result<Outcome, AppError> {
        let command = OrgCommand::RevokeDevice {
            actor: caller.person.clone(),
            device: device.clone(),
        };
        let (org, outcome) = self.command(caller, org_id, command_id, command).await?;
        // A revoked device stays revoked, so revoking its token again on a
        // retry takes nothing away that was issued since.
        self.credentials
            .revoke_device(org.as_str(), device.as_str())
            .await?;
        Ok(outcome)
    }

    /// The organization as the directory shows it.
    #[tracing::instrument(skip_all)]
    pub async fn organization(
        &self,
        caller: &Caller,
        org_id: &str,
        min_position: u64,
    ) -> Result<AtPosition<OrgRow>, AppError> {
        let org = caller.scope(org_id)?;
        let dir = self.reads.read_model(directory::NAME, min_position).await?;
        scope_of(role_in(&dir, caller).await?, Read::Organization)?;
        let row = directory::organization(&dir.client, &dir.schema, org.as_str())
            .await?
            .ok_or_else(|| AppError::unavailable("the organization is not in the directory yet"))?;
        Ok(AtPosition {
            value: row,
            position: dir.position,
        })
    }

    /// A page of the organization's members, each with whether their
    /// invitation is still pending.
    #[tracing::instrument(skip_all)]
    pub async fn members(
        &self,
        caller: &Caller,
        org_id: &str,
        page: &PageOf,
        min_position: u64,
    ) -> Result<AtPosition<Listed<Member>>, AppError> {
        let org = caller.scope(org_id)?;
        let dir = self.reads.read_model(directory::NAME, min_position).await?;
        scope_of(role_in(&dir, caller).await?, Read::Members)?;
        let listed = directory::members(&dir.client, &dir.schema, org.as_str(), page).await?;
        drop(dir.client);
        let persons: Vec<&str> = listed.rows.iter().map(|r| r.person_id.as_str()).collect();
        let accounts = self
            .credentials
            .account_holders(org.as_str(), &persons)
            .await?;
        let rows = listed
            .rows
            .into_iter()
            .map(|row| Member {
                invitation_pending: !accounts.contains(&row.person_id),
                row,
            })
            .collect();
        Ok(AtPosition {
            value: Listed {
                rows,
                next_after: listed.next_after,
            },
            position: dir.position,
        })
    }

    /// A page of the organization's history, newest first.
    #[tracing::instrument(skip_all)]
    pub async fn history(
        &self,
        caller: &Caller,
        org_id: &str,
        filter: &HistoryFilter,
        min_position: u64,
    ) -> Result<AtPosition<Page>, AppError> {
        let org = caller.scope(org_id)?;
        self.reads.authorize(caller, Read::History).await?;
        let model = self.reads.read_model(history::NAME, min_position).await?;
        let page = history::entries(&model.client, &model.schema, org.as_str(), filter)
            .await
            .map_err(|e| crate::error::query(&e))?;
        Ok(AtPosition {
            value: page,
            position: model.position,
        })
    }

    /// A page of the organization's devices, or of one member's (`person`),
    /// as the caller's role allows: a role that sees only its own devices
    /// gets its own, and is refused another member's.
    #[tracing::instrument(skip_all)]
    pub async fn devices(
        &self,
        caller: &Caller,
        org_id: &str,
        person: Option<&str>,
        page: &PageOf,
        min_position: u64,
    ) -> Result<AtPosition<Listed<DeviceRow>>, AppError> {
        let org = caller.scope(org_id)?;
        let dir = self.reads.read_model(directory::NAME, min_position).await?;
        let scope = scope_of(role_in(&dir, caller).await?, Read::Devices)?;
        let person = match (scope, person) {
            (Scope::Own, Some(p)) if p != caller.person.as_str() => {
                return Err(AppError::not_allowed(
                    "your role sees only your own devices",
                ));
            }
            (Scope::Own, _) => Some(caller.person.as_str()),
            (_, person) => person,
        };
        let devices =
            directory::devices(&dir.client, &dir.schema, org.as_str(), person, page).await?;
        Ok(AtPosition {
            value: devices,
            position: dir.position,
        })
    }
}

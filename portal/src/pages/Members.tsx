import { useState, type FormEvent } from "react";
import { ASSIGNABLE_ROLES, can, listAllDevices, listAllMembers, orgs, ROLE_NAMES, runCommand } from "../api";
import { DeviceTable } from "../components/DeviceTable";
import { Card, ErrorAlert, Loading, Notice, useAsync } from "../components/ui";
import { Role, type Member } from "../gen/trackhrs/org/v1/org_pb";
import { useOrg } from "../org";
import { CopyField } from "./Devices";

export function invitationLink(org: string, token: string): string {
  return `${window.location.origin}/#/accept?${new URLSearchParams({ org, token }).toString()}`;
}

/** Members (owners and admins manage; auditors read), seats and the org's devices. */
export function MembersPage() {
  const { session, org, reload: reloadOrg, nameOf } = useOrg();
  const may = can(session.role);
  const manage = may.manageMembers;
  const [minPosition, setMinPosition] = useState(0n);
  const members = useAsync(() => listAllMembers(session.orgId, minPosition), [session.orgId, minPosition]);
  const devices = useAsync(
    () => (may.readOrgDevices ? listAllDevices(session.orgId, minPosition) : Promise.resolve(null)),
    [session.orgId, minPosition, may.readOrgDevices],
  );

  const changed = (position: bigint) => {
    if (position > minPosition) {
      setMinPosition(position);
    } else {
      members.reload();
      devices.reload();
    }
    void reloadOrg(position);
  };

  const list = members.data?.members ?? [];
  const pending = list.filter((m) => m.invitationPending).length;

  return (
    <>
      <div className="page-head">
        <h1>Members</h1>
        {!manage && (
          <span className="tag" data-testid="read-only">
            Read-only
          </span>
        )}
      </div>

      <Card title="Seats" testId="seats-card" wide>
        {org ? (
          <SeatsBox orgId={session.orgId} seats={org.seats} active={org.activeMembers} manage={manage} onChanged={changed} />
        ) : (
          <Loading />
        )}
      </Card>

      {manage && <InviteCard orgId={session.orgId} onInvited={changed} />}

      <Card title={`Members (${list.length}${pending ? `, ${pending} invitation${pending > 1 ? "s" : ""} pending` : ""})`} testId="members-card" wide>
        {members.error ? <ErrorAlert error={members.error} /> : null}
        {members.loading && !members.data ? (
          <Loading />
        ) : (
          <div className="table-wrap" tabIndex={0}>
            <table data-testid="members-table">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>E-mail</th>
                  <th>Role</th>
                  <th>Status</th>
                  {manage && <th className="actions-col">Actions</th>}
                </tr>
              </thead>
              <tbody>
                {list.map((m) => (
                  <MemberRow key={m.personId} member={m} orgId={session.orgId} manage={manage} self={m.personId === session.personId} onChanged={changed} />
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Card>

      {may.readOrgDevices && (
        <Card title="Devices of the organization" testId="org-devices" wide>
          {devices.error ? <ErrorAlert error={devices.error} /> : null}
          {devices.loading && !devices.data ? (
            <Loading />
          ) : (
            <DeviceTable
              orgId={session.orgId}
              devices={devices.data?.devices ?? []}
              canRevoke={manage}
              showOwner
              nameOf={nameOf}
              onChanged={changed}
              testId="org-device-table"
            />
          )}
        </Card>
      )}
    </>
  );
}

function SeatsBox({ orgId, seats, active, manage, onChanged }: { orgId: string; seats: number; active: number; manage: boolean; onChanged: (p: bigint) => void }) {
  const [value, setValue] = useState(String(seats));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const n = Number(value);
    setBusy(true);
    setError(null);
    try {
      const r = await runCommand(`seats:${n}`, (commandId) => orgs.changeSeats({ commandId, orgId, seats: n }));
      onChanged(r.position);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <>
      <p data-testid="seats">
        <strong>{active}</strong> of <strong>{seats}</strong> seats taken
      </p>
      {manage && (
        <form className="inline-form" onSubmit={submit}>
          <label>
            Seats
            <input type="number" min={0} step={1} data-testid="seats-input" value={value} onChange={(e) => setValue(e.target.value)} required />
          </label>
          <button type="submit" disabled={busy} data-testid="seats-submit">
            {busy ? "Saving…" : "Change seats"}
          </button>
        </form>
      )}
      <ErrorAlert error={error} />
    </>
  );
}

function InviteCard({ orgId, onInvited }: { orgId: string; onInvited: (p: bigint) => void }) {
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>(Role.EMPLOYEE);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [link, setLink] = useState<{ who: string; url: string; expires: bigint } | null>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setLink(null);
    try {
      const req = { orgId, email: email.trim(), name: name.trim(), role };
      const res = await runCommand(`invite:${JSON.stringify(req)}`, (commandId) => orgs.inviteMember({ commandId, ...req }));
      setLink({ who: req.name || req.email, url: invitationLink(orgId, res.invitationToken), expires: res.invitationExpiresAt });
      setEmail("");
      setName("");
      onInvited(res.result?.position ?? 0n);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <Card title="Invite a member" testId="invite-card" wide>
      <form className="inline-form" onSubmit={submit} data-testid="invite-form">
        <label>
          E-mail
          <input type="email" data-testid="invite-email" value={email} onChange={(e) => setEmail(e.target.value)} required />
        </label>
        <label>
          Name
          <input data-testid="invite-name" value={name} onChange={(e) => setName(e.target.value)} required />
        </label>
        <label>
          Role
          <select data-testid="invite-role" value={role} onChange={(e) => setRole(Number(e.target.value) as Role)}>
            {ASSIGNABLE_ROLES.map((r) => (
              <option key={r} value={r}>
                {ROLE_NAMES[r]}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" className="primary" disabled={busy} data-testid="invite-submit">
          {busy ? "Inviting…" : "Invite"}
        </button>
      </form>
      <ErrorAlert error={error} />
      {link && <InvitationLink {...link} />}
    </Card>
  );
}

function InvitationLink({ who, url, expires }: { who: string; url: string; expires: bigint }) {
  return (
    <div className="secret" data-testid="invite-result">
      <p>
        Send this link to {who}. It works once{expires > 0n ? `, until ${new Date(Number(expires) * 1000).toLocaleString()}` : ""}, and is shown only now.
      </p>
      <CopyField value={url} testId="invite-link" />
    </div>
  );
}

function status(m: Member): { label: string; cls: string } {
  if (m.invitationPending) return { label: m.active ? "Invitation pending" : "Invitation pending (deactivated)", cls: "tag tag-wait" };
  return m.active ? { label: "Active", cls: "tag tag-on" } : { label: "Deactivated", cls: "tag tag-off" };
}

function MemberRow({ member, orgId, manage, self, onChanged }: { member: Member; orgId: string; manage: boolean; self: boolean; onChanged: (p: bigint) => void }) {
  const [role, setRole] = useState<Role>(member.role);
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [link, setLink] = useState<{ url: string; expires: bigint } | null>(null);
  const st = status(member);
  const personId = member.personId;

  async function act(what: string, send: () => Promise<bigint>) {
    setBusy(what);
    setError(null);
    try {
      onChanged(await send());
    } catch (err) {
      setError(err);
    } finally {
      setBusy(null);
    }
  }

  const changeRole = () =>
    act("role", async () => (await runCommand(`role:${personId}:${role}`, (commandId) => orgs.changeRole({ commandId, orgId, personId, role }))).position);
  const deactivate = () =>
    act("deactivate", async () => (await runCommand(`deactivate:${personId}`, (commandId) => orgs.deactivateMember({ commandId, orgId, personId }))).position);
  const reactivate = () =>
    act("reactivate", async () => (await runCommand(`reactivate:${personId}`, (commandId) => orgs.reactivateMember({ commandId, orgId, personId }))).position);
  const resend = () =>
    act("resend", async () => {
      const res = await orgs.resendInvitation({ orgId, personId });
      setLink({ url: invitationLink(orgId, res.invitationToken), expires: res.invitationExpiresAt });
      return res.result?.position ?? 0n;
    });

  return (
    <>
      <tr data-testid="members-row" data-person-id={personId} data-email={member.email}>
        <td>
          {member.name || (member.email ? "" : <em>erased</em>)}
          {self && <span className="muted small"> (you)</span>}
        </td>
        <td className="mono">{member.email}</td>
        <td data-testid="members-role">{ROLE_NAMES[member.role]}</td>
        <td>
          <span className={st.cls} data-testid="members-status">
            {st.label}
          </span>
        </td>
        {manage && (
          <td className="actions-col">
            <div className="row-actions">
              <select aria-label={`Role of ${member.name || member.email}`} data-testid="role-select" value={role} onChange={(e) => setRole(Number(e.target.value) as Role)}>
                {ASSIGNABLE_ROLES.map((r) => (
                  <option key={r} value={r}>
                    {ROLE_NAMES[r]}
                  </option>
                ))}
              </select>
              <button type="button" className="small" data-testid="role-apply" disabled={busy !== null || role === member.role} onClick={() => void changeRole()}>
                {busy === "role" ? "Saving…" : "Change role"}
              </button>
              {member.active ? (
                <button
                  type="button"
                  className="small danger"
                  data-testid="member-deactivate"
                  disabled={busy !== null}
                  onClick={() => {
                    if (window.confirm(`Deactivate ${member.name || member.email}? Their devices and sessions are revoked at once.`)) void deactivate();
                  }}
                >
                  {busy === "deactivate" ? "Deactivating…" : "Deactivate"}
                </button>
              ) : (
                <button type="button" className="small" data-testid="member-reactivate" disabled={busy !== null} onClick={() => void reactivate()}>
                  {busy === "reactivate" ? "Reactivating…" : "Reactivate"}
                </button>
              )}
              {member.invitationPending && (
                <button type="button" className="small" data-testid="member-resend" disabled={busy !== null} onClick={() => void resend()}>
                  {busy === "resend" ? "Sending…" : "New invitation link"}
                </button>
              )}
            </div>
          </td>
        )}
      </tr>
      {(error !== null || link) && (
        <tr className="row-detail">
          <td colSpan={manage ? 5 : 4}>
            <ErrorAlert error={error} />
            {link && (
              <Notice>
                <InvitationLink who={member.name || member.email} {...link} />
              </Notice>
            )}
          </td>
        </tr>
      )}
    </>
  );
}

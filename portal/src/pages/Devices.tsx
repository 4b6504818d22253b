import { useState, type FormEvent } from "react";
import { can, listAllDevices, orgs, runCommand } from "../api";
import { DeviceTable } from "../components/DeviceTable";
import { Card, ErrorAlert, Loading, useAsync } from "../components/ui";
import { useOrg } from "../org";

/** The signed-in member's own devices: list, revoke, enroll. */
export function DevicesPage() {
  const { session, nameOf } = useOrg();
  const may = can(session.role);
  const [minPosition, setMinPosition] = useState(0n);
  const list = useAsync(
    () => listAllDevices(session.orgId, minPosition, session.personId),
    [session.orgId, session.personId, minPosition],
  );
  const mine = list.data?.devices ?? [];

  return (
    <>
      <div className="page-head">
        <h1>My devices</h1>
      </div>
      <Card title="Devices" testId="my-devices" wide>
        {list.error ? <ErrorAlert error={list.error} /> : null}
        {list.loading && !list.data ? (
          <Loading />
        ) : (
          <DeviceTable
            orgId={session.orgId}
            devices={mine}
            canRevoke={may.ownDevices}
            showOwner={false}
            nameOf={nameOf}
            onChanged={(p) => setMinPosition(p)}
            testId="device-table"
          />
        )}
      </Card>
      {may.ownDevices && <EnrollCard orgId={session.orgId} onEnrolled={(p) => setMinPosition(p)} />}
    </>
  );
}

function EnrollCard({ orgId, onEnrolled }: { orgId: string; onEnrolled: (position: bigint) => void }) {
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [token, setToken] = useState<string | null>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setToken(null);
    try {
      const deviceName = name.trim();
      const res = await runCommand(`enroll:${deviceName}`, (commandId) => orgs.enrollDevice({ commandId, orgId, name: deviceName }));
      setToken(res.deviceToken);
      setName("");
      onEnrolled(res.result?.position ?? 0n);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <Card title="Enroll a device" testId="enroll-card" wide>
      <form className="inline-form" onSubmit={submit}>
        <label>
          Device name
          <input data-testid="enroll-name" value={name} onChange={(e) => setName(e.target.value)} placeholder="Work laptop" required />
        </label>
        <button type="submit" className="primary" disabled={busy} data-testid="enroll-submit">
          {busy ? "Enrolling…" : "Enroll"}
        </button>
      </form>
      <ErrorAlert error={error} />
      {token && (
        <div className="secret" data-testid="enroll-token-box">
          <p>
            The agent's device token, shown once: put it in a file readable only by you and start the agent with <code>--token-file</code>.
          </p>
          <CopyField value={token} testId="enroll-token" />
        </div>
      )}
    </Card>
  );
}

export function CopyField({ value, testId }: { value: string; testId: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <div className="copy-field">
      <input readOnly value={value} data-testid={testId} onFocus={(e) => e.target.select()} aria-label="Value to copy" />
      <button
        type="button"
        data-testid={`${testId}-copy`}
        onClick={() => {
          void navigator.clipboard?.writeText(value).then(
            () => setCopied(true),
            () => setCopied(false),
          );
        }}
      >
        {copied ? "Copied" : "Copy"}
      </button>
    </div>
  );
}

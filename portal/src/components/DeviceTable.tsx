import { useState } from "react";
import { orgs, runCommand } from "../api";
import type { Device } from "../gen/trackhrs/org/v1/org_pb";
import { ErrorAlert } from "./ui";

/** Devices with a Revoke button each (when `canRevoke`). */
export function DeviceTable({
  orgId,
  devices,
  canRevoke,
  showOwner,
  nameOf,
  onChanged,
  testId,
}: {
  orgId: string;
  devices: Device[];
  canRevoke: boolean;
  showOwner: boolean;
  nameOf: (id: string) => string;
  onChanged: (position: bigint) => void;
  testId: string;
}) {
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function revoke(device: Device) {
    if (!window.confirm(`Revoke “${device.name || device.deviceId}”? Its agent stops uploading at once.`)) return;
    setBusy(device.deviceId);
    setError(null);
    try {
      const result = await runCommand(`revoke:${device.deviceId}`, (commandId) => orgs.revokeDevice({ commandId, orgId, deviceId: device.deviceId }));
      onChanged(result.position);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(null);
    }
  }

  return (
    <>
      <ErrorAlert error={error} />
      {devices.length === 0 ? (
        <p className="muted" data-testid={`${testId}-empty`}>
          No devices.
        </p>
      ) : (
        <div className="table-wrap" tabIndex={0}>
          <table data-testid={testId}>
            <thead>
              <tr>
                <th>Name</th>
                {showOwner && <th>Member</th>}
                <th>Device id</th>
                <th>Status</th>
                {canRevoke && <th className="actions-col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {devices.map((d) => (
                <tr key={d.deviceId} data-testid="device-row" data-device-id={d.deviceId}>
                  <td>{d.name || "–"}</td>
                  {showOwner && <td>{nameOf(d.personId)}</td>}
                  <td className="mono">{d.deviceId}</td>
                  <td>{d.revoked ? <span className="tag tag-off">Revoked</span> : <span className="tag tag-on">Active</span>}</td>
                  {canRevoke && (
                    <td className="actions-col">
                      {!d.revoked && (
                        <button type="button" className="danger small" data-testid="device-revoke" disabled={busy === d.deviceId} onClick={() => void revoke(d)}>
                          {busy === d.deviceId ? "Revoking…" : "Revoke"}
                        </button>
                      )}
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

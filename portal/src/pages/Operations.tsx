import { useCallback, useEffect, useRef, useState } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { ops } from "../api";
import { Card, ErrorAlert, Loading, Notice } from "../components/ui";
import type { DeadLetter, ListProjectionsResponse, OrgUsage, ReplayDeadLettersResponse } from "../gen/trackhrs/ops/v1/ops_pb";
import { useOrg } from "../org";
import { dateTime } from "../time";

/** How often the read models' figures are fetched again. */
const REFRESH_MS = 5_000;
/** Dead letters listed per read model. */
const LETTERS_SHOWN = 200;
/** Organizations listed by storage. */
const ORGS_SHOWN = 100;

/** Bytes as B, KiB, MiB or GiB. */
function size(bytes: bigint): string {
  const n = Number(bytes);
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

interface Snapshot {
  projections: ListProjectionsResponse;
  letters: DeadLetter[];
  /** The organizations storing the most, most first; null while its read
   * model is being built (or cannot answer). */
  usage: OrgUsage[] | null;
  /** Unix milliseconds of the answer. */
  at: number;
}

/**
 * The read models' versions against the log (ListProjections), their dead
 * letters (ListDeadLetters) and a Replay per read model
 * (ReplayDeadLetters): owners and admins of the operator organization.
 * Everyone else who opens the route sees the server's refusal.
 */
export function OperationsPage() {
  const { timeZone } = useOrg();
  const [snapshot, setSnapshot] = useState<Snapshot | null>(null);
  const [error, setError] = useState<unknown>(null);
  const busy = useRef(false);
  const alive = useRef(true);

  const load = useCallback(async () => {
    if (busy.current) return;
    busy.current = true;
    try {
      const [projections, letters, usage] = await Promise.all([
        ops.listProjections({}),
        ops.listDeadLetters({ projection: "" }),
        // Its own read model may still be building: the rest shows anyway.
        ops.listOrgUsage({ limit: ORGS_SHOWN }).catch(() => null),
      ]);
      if (!alive.current) return;
      setSnapshot({ projections, letters: letters.letters, usage: usage?.orgs ?? null, at: Date.now() });
      setError(null);
    } catch (err) {
      if (alive.current) setError(err);
    } finally {
      busy.current = false;
    }
  }, []);

  const denied = error instanceof ConnectError && error.code === Code.PermissionDenied;

  useEffect(() => {
    alive.current = true;
    void load();
    return () => {
      alive.current = false;
    };
  }, [load]);

  useEffect(() => {
    if (denied) return;
    const timer = setInterval(() => void load(), REFRESH_MS);
    return () => clearInterval(timer);
  }, [load, denied]);

  if (denied && !snapshot) {
    return (
      <>
        <div className="page-head">
          <h1>Operations</h1>
        </div>
        <ErrorAlert error={error} testId="ops-error" />
      </>
    );
  }

  const versions = snapshot?.projections.versions ?? [];
  const names = [...new Set(versions.map((v) => v.name))];

  return (
    <>
      <div className="page-head">
        <h1>Operations</h1>
        <span className="muted small" data-testid="ops-updated">
          {snapshot ? `Updated ${dateTime(snapshot.at, timeZone)}, every ${REFRESH_MS / 1000} s` : ""}
        </span>
      </div>
      <ErrorAlert error={error} testId="ops-error" />
      <Card
        title="Read models"
        testId="ops-projections"
        wide
        actions={
          snapshot ? (
            <span className="muted small" data-testid="ops-stream-last">
              log at sequence {String(snapshot.projections.streamLastSequence)}
            </span>
          ) : undefined
        }
      >
        {!snapshot ? (
          error ? null : <Loading what="Loading the read models" />
        ) : versions.length === 0 ? (
          <p className="muted">No read models.</p>
        ) : (
          <div className="table-wrap" tabIndex={0}>
            <table data-testid="ops-table">
              <thead>
                <tr>
                  <th>Read model</th>
                  <th className="num">Version</th>
                  <th>State</th>
                  <th className="num">Position</th>
                  <th className="num">Lag</th>
                  <th className="num">Pending</th>
                  <th className="num">Events applied</th>
                  <th className="num">Commits applied</th>
                  <th className="num">Dead letters</th>
                  <th>Updated</th>
                </tr>
              </thead>
              <tbody>
                {versions.map((v) => (
                  <tr key={`${v.name}/${v.version}`} data-testid="ops-row" data-name={v.name} data-version={v.version} data-state={v.state}>
                    <td className="mono" data-testid="ops-name">
                      {v.name}
                    </td>
                    <td className="num" data-testid="ops-version">
                      {v.version}
                    </td>
                    <td data-testid="ops-state">
                      <span className={v.state === "live" ? "tag tag-on" : v.state === "building" ? "tag tag-wait" : "tag"}>{v.state}</span>
                    </td>
                    <td className="num" data-testid="ops-position">
                      {String(v.position)}
                    </td>
                    <td className={v.lag > 0n ? "num warn" : "num"} data-testid="ops-lag">
                      {String(v.lag)}
                    </td>
                    <td className="num" data-testid="ops-pending" title={v.pendingMessages < 0n ? "Its consumer does not exist (not started since the last reset)" : undefined}>
                      {v.pendingMessages < 0n ? "no consumer" : String(v.pendingMessages)}
                    </td>
                    <td className="num" data-testid="ops-events">
                      {String(v.eventsApplied)}
                    </td>
                    <td className="num" data-testid="ops-commits">
                      {String(v.commitsApplied)}
                    </td>
                    <td className={v.deadLetters > 0n ? "num warn" : "num"} data-testid="ops-dead">
                      {String(v.deadLetters)}
                    </td>
                    <td className="nowrap small">{v.updatedAtMicros > 0n ? dateTime(Number(v.updatedAtMicros / 1000n), timeZone) : "–"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Card>

      <Card title="Storage by organization" testId="ops-usage" wide>
        {!snapshot ? null : snapshot.usage === null ? (
          <p className="muted" data-testid="ops-usage-unavailable">
            The storage figures cannot be read yet (their read model may still be building).
          </p>
        ) : snapshot.usage.length === 0 ? (
          <p className="muted">Nothing stored yet.</p>
        ) : (
          <div className="table-wrap" tabIndex={0}>
            <table data-testid="ops-usage-table">
              <thead>
                <tr>
                  <th>Organization</th>
                  <th className="num">Messages</th>
                  <th className="num">Payload</th>
                  <th>Largest parts</th>
                </tr>
              </thead>
              <tbody>
                {snapshot.usage.map((o) => (
                  <tr key={o.orgId} data-testid="ops-usage-row" data-org={o.orgId} data-bytes={String(o.bytes)} data-messages={String(o.messages)}>
                    <td className="mono">{o.orgId}</td>
                    <td className="num">{String(o.messages)}</td>
                    <td className="num">{size(o.bytes)}</td>
                    <td className="small">
                      {o.kinds
                        .slice(0, 3)
                        .map((k) => `${k.aggregate} ${size(k.bytes)}`)
                        .join(", ")}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            {snapshot.usage.length >= ORGS_SHOWN && <p className="muted small">The {ORGS_SHOWN} organizations storing the most are listed.</p>}
          </div>
        )}
      </Card>

      {snapshot &&
        names.map((name) => (
          <ReadModel key={name} name={name} letters={snapshot.letters.filter((l) => l.projection === name)} onReplayed={() => void load()} />
        ))}
    </>
  );
}

/** One read model's dead letters and its Replay button. */
function ReadModel({ name, letters, onReplayed }: { name: string; letters: DeadLetter[]; onReplayed: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [report, setReport] = useState<ReplayDeadLettersResponse | null>(null);

  async function replay() {
    setBusy(true);
    setError(null);
    setReport(null);
    try {
      setReport(await ops.replayDeadLetters({ projection: name }));
      onReplayed();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <Card
      title={
        <>
          <span className="mono">{name}</span>: dead letters ({letters.length})
        </>
      }
      testId="ops-model"
      wide
      actions={
        <button type="button" data-testid="ops-replay" data-name={name} disabled={busy} onClick={() => void replay()}>
          {busy ? "Replaying…" : "Replay dead letters"}
        </button>
      }
    >
      <div data-name={name} data-testid={`ops-model-${name}`}>
        {letters.length === 0 ? (
          <p className="muted small" data-testid="ops-no-letters">
            No dead letters.
          </p>
        ) : (
          <div className="table-wrap" tabIndex={0}>
            <table data-testid="ops-letters">
              <thead>
                <tr>
                  <th className="num">DLQ seq.</th>
                  <th className="num">Version</th>
                  <th>Subject</th>
                  <th className="num">Stream seq.</th>
                  <th>Reason</th>
                </tr>
              </thead>
              <tbody>
                {letters.slice(0, LETTERS_SHOWN).map((l) => (
                  <tr key={String(l.dlqSequence)} data-testid="ops-letter" data-dlq-sequence={String(l.dlqSequence)}>
                    <td className="num">{String(l.dlqSequence)}</td>
                    <td className="num">{l.version}</td>
                    <td className="mono title-cell">{l.subject}</td>
                    <td className="num">{String(l.streamSequence)}</td>
                    <td className="title-cell" data-testid="ops-letter-reason">
                      {l.reason}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            {letters.length > LETTERS_SHOWN && <p className="muted small">The first {LETTERS_SHOWN} are listed.</p>}
          </div>
        )}
        <ErrorAlert error={error} testId="ops-replay-error" />
        {report && (
          <Notice testId="ops-report">
            <span data-testid="ops-report-summary">
              Replay of {name}: {report.replayed} replayed, {report.alreadyApplied} already applied, {report.stillFailing.length} still failing.
            </span>
            {report.stillFailing.length > 0 && (
              <ul className="still-failing" data-testid="ops-still-failing">
                {report.stillFailing.map((f) => (
                  <li key={String(f.dlqSequence)}>
                    #{String(f.dlqSequence)}: {f.reason}
                  </li>
                ))}
              </ul>
            )}
          </Notice>
        )}
      </div>
    </Card>
  );
}

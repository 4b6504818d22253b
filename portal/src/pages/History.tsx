import { useEffect, useMemo, useRef, useState } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { can, errorMessage, listAllDevices, orgs } from "../api";
import { Card, ErrorAlert, Loading, Notice, useAsync } from "../components/ui";
import type { HistoryEntry } from "../gen/trackhrs/org/v1/org_pb";
import { useOrg } from "../org";
import { navigate } from "../router";
import { dateTime } from "../time";

/** The event types of the organization's history, in the order the filter lists them. */
export const HISTORY_EVENT_TYPES: { type: string; label: string }[] = [
  { type: "OrganizationCreated", label: "Organization created" },
  { type: "MemberInvited", label: "Member invited" },
  { type: "SeatsChanged", label: "Seats changed" },
  { type: "MemberRoleChanged", label: "Role changed" },
  { type: "MemberDeactivated", label: "Member deactivated" },
  { type: "MemberReactivated", label: "Member reactivated" },
  { type: "SettingsChanged", label: "Settings changed" },
  { type: "CategoryRulesChanged", label: "Rules changed" },
  { type: "DeviceEnrolled", label: "Device enrolled" },
  { type: "DeviceRevoked", label: "Device revoked" },
];

const KNOWN = new Set(HISTORY_EVENT_TYPES.map((t) => t.type));
const LABELS = new Map(HISTORY_EVENT_TYPES.map((t) => [t.type, t.label]));

/** Entries per page; `?limit=` (1 to 500) overrides it. */
const PAGE = 50;

interface More {
  /** The filter these pages belong to. */
  key: string;
  entries: HistoryEntry[];
  next: bigint;
}

/**
 * The organization's history, newest first (ListHistory): owners, admins
 * and auditors; anyone else who opens the route sees the server's refusal.
 * Filters live in the route: `#/history?person=..&types=A,B`.
 */
export function HistoryPage({ params }: { params: URLSearchParams }) {
  const { session, members, nameOf, timeZone } = useOrg();
  const person = params.get("person") ?? "";
  const types = useMemo(
    () =>
      (params.get("types") ?? "")
        .split(",")
        .map((t) => t.trim())
        .filter((t) => KNOWN.has(t)),
    [params],
  );
  const typesKey = types.join(",");
  const limitParam = Number(params.get("limit"));
  const limit = Number.isInteger(limitParam) && limitParam >= 1 && limitParam <= 500 ? limitParam : PAGE;
  const key = `${person}|${typesKey}|${limit}`;

  const go = (next: { person?: string; types?: string[] }) => {
    const p = next.person ?? person;
    const t = (next.types ?? types).join(",");
    const q: Record<string, string> = {};
    if (p) q.person = p;
    if (t) q.types = t;
    if (limit !== PAGE) q.limit = String(limit);
    navigate("history", q, true);
  };

  const first = useAsync(
    async () => ({ key, page: await orgs.listHistory({ orgId: session.orgId, personId: person, eventTypes: types, limit }) }),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [session.orgId, key],
  );

  // Pages after the first, for the filter they were loaded with.
  const [more, setMore] = useState<More>({ key: "", entries: [], next: 0n });
  const [moreBusy, setMoreBusy] = useState(false);
  const [moreError, setMoreError] = useState<unknown>(null);
  const current = useRef(key);
  useEffect(() => {
    current.current = key;
    setMoreError(null);
  }, [key]);

  const devices = useAsync(
    () => (can(session.role).readOrgDevices ? listAllDevices(session.orgId) : Promise.resolve(null)),
    [session.orgId, session.role],
  );
  /** A device's name, and its member's unless that is `besides`. */
  const deviceName = (id: string, besides = "") => {
    const d = devices.data?.devices.find((x) => x.deviceId === id);
    return d ? `${d.name || id}${d.personId && d.personId !== besides ? ` (${nameOf(d.personId)})` : ""}` : id;
  };

  // The first page of this filter (not of the previous one, while loading).
  const firstPage = first.data?.key === key ? first.data.page : undefined;
  const extra = more.key === key && firstPage ? more : null;
  const entries = [...(firstPage?.entries ?? []), ...(extra?.entries ?? [])];
  const next = extra ? extra.next : (firstPage?.nextBefore ?? 0n);

  async function loadMore() {
    if (next === 0n) return;
    const forKey = key;
    setMoreBusy(true);
    setMoreError(null);
    try {
      const page = await orgs.listHistory({ orgId: session.orgId, personId: person, eventTypes: types, limit, before: next });
      if (current.current !== forKey) return;
      setMore((m) => ({
        key: forKey,
        entries: [...(m.key === forKey ? m.entries : []), ...page.entries],
        next: page.nextBefore,
      }));
    } catch (err) {
      if (current.current === forKey) setMoreError(err);
    } finally {
      setMoreBusy(false);
    }
  }

  const refresh = () => {
    setMore({ key: "", entries: [], next: 0n });
    first.reload();
  };

  const denied = first.error instanceof ConnectError && first.error.code === Code.PermissionDenied;
  const sortedMembers = [...members].sort((a, b) => (a.name || a.email).localeCompare(b.name || b.email));

  const who = (actor: string) => {
    const [kind, id] = splitActor(actor);
    // "system", or "system:<what>" (the demo data is seeded as "system:dev").
    if (kind === "system") return id ? `System (${id})` : "System";
    if (kind === "person") return nameOf(id);
    if (kind === "device") return `Device ${deviceName(id)}`;
    return actor;
  };

  const toggleType = (type: string, on: boolean) => go({ types: on ? HISTORY_EVENT_TYPES.map((t) => t.type).filter((t) => t === type || types.includes(t)) : types.filter((t) => t !== type) });

  return (
    <>
      <div className="page-head">
        <h1>History</h1>
        {!denied && (
          <button type="button" data-testid="history-refresh" onClick={refresh} disabled={first.loading}>
            Refresh
          </button>
        )}
      </div>
      <p className="muted small">Who did what in the organization, newest first. Times in {timeZone}.</p>

      {denied ? (
        <ErrorAlert error={first.error} testId="history-error" />
      ) : (
        <>
          <Card title="Filter" testId="history-filters" wide>
            <div className="history-filters">
              <label>
                Person (done by or about)
                <select data-testid="history-person" value={person} onChange={(e) => go({ person: e.target.value })}>
                  <option value="">Everyone</option>
                  {person && !members.some((m) => m.personId === person) && <option value={person}>{nameOf(person)}</option>}
                  {sortedMembers.map((m) => (
                    <option key={m.personId} value={m.personId}>
                      {m.name || m.email || m.personId}
                      {m.name && m.email ? ` <${m.email}>` : ""}
                    </option>
                  ))}
                </select>
              </label>
              <fieldset className="history-types" data-testid="history-types">
                <legend>
                  Event types <span className="muted small">({types.length === 0 ? "all" : `${types.length} chosen`})</span>
                </legend>
                <div className="chips">
                  {HISTORY_EVENT_TYPES.map(({ type, label }) => (
                    <label key={type} className={types.includes(type) ? "check chip on" : "check chip"} title={type}>
                      <input type="checkbox" data-testid={`history-type-${type}`} value={type} checked={types.includes(type)} onChange={(e) => toggleType(type, e.target.checked)} />
                      {label}
                    </label>
                  ))}
                </div>
              </fieldset>
              {(person || types.length > 0) && (
                <button type="button" className="link" data-testid="history-clear" onClick={() => navigate("history", limit !== PAGE ? { limit: String(limit) } : undefined, true)}>
                  Clear filters
                </button>
              )}
            </div>
          </Card>

          <Card title={firstPage ? `Entries (${entries.length}${next !== 0n ? "+" : ""})` : "Entries"} testId="history-card" wide>
            <ErrorAlert error={first.error} testId="history-error" />
            {!firstPage && !first.error ? (
              <Loading what="Loading the history" />
            ) : firstPage && entries.length === 0 ? (
              <p className="muted" data-testid="history-empty">
                No entries{person || types.length ? " match the filter" : ""}.
              </p>
            ) : firstPage ? (
              <div className="table-wrap" tabIndex={0}>
                <table data-testid="history-table" aria-busy={first.loading}>
                  <thead>
                    <tr>
                      <th>When</th>
                      <th>Who</th>
                      <th>What</th>
                      <th>About</th>
                      <th>Detail</th>
                    </tr>
                  </thead>
                  <tbody>
                    {entries.map((e, i) => (
                      <tr
                        key={`${e.position}:${i}`}
                        data-testid="history-row"
                        data-event-type={e.eventType}
                        data-position={String(e.position)}
                        data-actor={e.actor}
                        data-person-id={e.personId || undefined}
                        data-device-id={e.deviceId || undefined}
                      >
                        <td data-testid="history-when" title={`position ${e.position}`}>
                          <When ms={Number(e.recordedAtMicros / 1000n)} timeZone={timeZone} />
                        </td>
                        <td data-testid="history-who" title={e.actor}>
                          {who(e.actor)}
                        </td>
                        <td data-testid="history-what" title={e.eventType}>
                          {LABELS.get(e.eventType) ?? e.eventType}
                        </td>
                        <td data-testid="history-about">
                          {[e.personId ? nameOf(e.personId) : "", e.deviceId ? `device ${deviceName(e.deviceId, e.personId)}` : ""].filter(Boolean).join(" · ") || <span className="muted">–</span>}
                        </td>
                        <td data-testid="history-detail">{e.detail || <span className="muted">–</span>}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            ) : null}
            <ErrorAlert error={moreError} testId="history-more-error" />
            {firstPage && next !== 0n && (
              <button type="button" data-testid="history-more" disabled={moreBusy} onClick={() => void loadMore()}>
                {moreBusy ? "Loading…" : "Load more"}
              </button>
            )}
            {firstPage && next === 0n && entries.length > 0 && (
              <p className="muted small" data-testid="history-end">
                The beginning of the history.
              </p>
            )}
          </Card>
          {devices.error ? <Notice>Device names are not available: {errorMessage(devices.error)}</Notice> : null}
        </>
      )}
    </>
  );
}

/** Date and time, each kept on one line (the pair may wrap on narrow screens). */
function When({ ms, timeZone }: { ms: number; timeZone: string }) {
  const [date, time] = dateTime(ms, timeZone).split(" ");
  return (
    <>
      <span className="nowrap">{date}</span> <span className="nowrap">{time}</span>
    </>
  );
}

function splitActor(actor: string): [string, string] {
  const i = actor.indexOf(":");
  return i < 0 ? [actor, ""] : [actor.slice(0, i), actor.slice(i + 1)];
}

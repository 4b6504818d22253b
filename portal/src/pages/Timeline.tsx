import { useMemo, useState } from "react";
import type { ChartConfiguration, Scale } from "chart.js";
import { activity, can, errorMessage, listAllDevices } from "../api";
import { ACTIVE_COLOR, ChartView, IDLE_COLOR } from "../components/ChartView";
import { Card, ErrorAlert, Loading, Notice, useAsync } from "../components/ui";
import type { Device } from "../gen/trackhrs/org/v1/org_pb";
import type { RawEvent } from "../gen/trackhrs/activity/v1/activity_pb";
import { useOrg } from "../org";
import { navigate } from "../router";
import { addDays, clock, duration, startOfDay, today } from "../time";

const HOUR = 3_600_000;

interface Span {
  row: string;
  start: number;
  end: number;
  color: string;
  /** Category, "Active"/"Idle", or the bucket type. */
  kind: string;
  app: string;
  title: string;
  device: string;
  bucket: string;
}

interface DeviceResult {
  device: Device;
  events: RawEvent[];
  truncated: boolean;
  error: unknown;
}

/**
 * A member's day: GetDeviceTimeline for each of their devices (ListDevices
 * lists every device of the org for owners, admins, managers and auditors;
 * employees see only their own), or for the one device picked.
 */
export function TimelinePage({ params }: { params: URLSearchParams }) {
  const { org, session, timeZone, members, nameOf, categoryColor } = useOrg();
  const team = can(session.role).seeTeam;
  const person = (team && params.get("person")) || session.personId;
  const day = params.get("day") || today(timeZone);
  const deviceParam = params.get("device") ?? "";
  const [wholeDay, setWholeDay] = useState(false);

  const go = (next: { person?: string; day?: string; device?: string }) => {
    const p = next.person ?? person;
    // Another member's devices are others: the device choice goes with the member.
    const device = next.device ?? (p === person ? deviceParam : "");
    navigate("timeline", { person: p, day: next.day ?? day, ...(device ? { device } : {}) });
  };

  const from = startOfDay(day, timeZone);
  const to = startOfDay(addDays(day, 1), timeZone);

  const data = useAsync(async () => {
    const { devices } = await listAllDevices(session.orgId, 0n, person);
    const results: DeviceResult[] = await Promise.all(
      devices.map(async (device) => {
        try {
          const t = await activity.getDeviceTimeline({
            orgId: session.orgId,
            deviceId: device.deviceId,
            fromUnixMs: BigInt(from),
            toUnixMs: BigInt(to),
          });
          return { device, events: t.events, truncated: t.truncated, error: null };
        } catch (error) {
          return { device, events: [], truncated: false, error };
        }
      }),
    );
    return { results };
  }, [session.orgId, person, from, to]);

  // One device when one of this member's is picked, else all of them.
  const allResults = data.data?.results;
  const device = allResults?.some((r) => r.device.deviceId === deviceParam) ? deviceParam : "";
  const shown = useMemo(() => (allResults ? allResults.filter((r) => !device || r.device.deviceId === device) : []), [allResults, device]);

  const model = useMemo(() => (data.data ? build(shown, categoryColor) : null), [data.data, shown, categoryColor]);

  const chart = useMemo(() => {
    const spans = model?.spans ?? [];
    let min = from;
    let max = to;
    if (!wholeDay && spans.length > 0) {
      const first = Math.min(...spans.map((s) => s.start));
      const last = Math.max(...spans.map((s) => s.end));
      min = Math.max(from, Math.floor((first - from) / HOUR) * HOUR + from);
      max = Math.min(to, Math.ceil((last - from) / HOUR) * HOUR + from);
      if (max - min < 2 * HOUR) max = Math.min(to, min + 2 * HOUR);
    }
    return timelineChart(spans, model?.rows ?? [], min, max, timeZone);
  }, [model, from, to, wholeDay, timeZone]);

  const pickable = team ? members.filter((m) => !m.invitationPending) : [];

  return (
    <>
      <div className="page-head">
        <h1>Timeline</h1>
        <div className="toolbar">
          {team && pickable.length > 0 && (
            <select aria-label="Member" data-testid="timeline-person" value={person} onChange={(e) => go({ person: e.target.value })}>
              {!pickable.some((m) => m.personId === person) && <option value={person}>{nameOf(person)}</option>}
              {pickable.map((m) => (
                <option key={m.personId} value={m.personId}>
                  {m.name || m.email || m.personId}
                </option>
              ))}
            </select>
          )}
          {allResults && allResults.length > 1 && (
            <select aria-label="Device" data-testid="timeline-device" value={device} onChange={(e) => go({ device: e.target.value })}>
              <option value="">All devices ({allResults.length})</option>
              {allResults.map((r) => (
                <option key={r.device.deviceId} value={r.device.deviceId}>
                  {r.device.name || r.device.deviceId}
                  {r.device.revoked ? " (revoked)" : ""}
                </option>
              ))}
            </select>
          )}
          <button type="button" onClick={() => go({ day: addDays(day, -1) })} aria-label="Previous day" data-testid="timeline-prev">
            ‹
          </button>
          <input type="date" aria-label="Day" data-testid="timeline-day" value={day} onChange={(e) => e.target.value && go({ day: e.target.value })} />
          <button type="button" onClick={() => go({ day: addDays(day, 1) })} aria-label="Next day" data-testid="timeline-next">
            ›
          </button>
          <label className="check">
            <input type="checkbox" checked={wholeDay} onChange={(e) => setWholeDay(e.target.checked)} /> Whole day
          </label>
        </div>
      </div>
      <p className="muted small" data-testid="timeline-title">
        {nameOf(person)}
        {device ? ` · ${shown[0]?.device.name || device}` : ""} · {day} · {timeZone}
        {org ? "" : " (loading the organization)"}
      </p>

      {data.error ? <ErrorAlert error={data.error} /> : null}
      {data.loading && !data.data && <Loading what="Loading the timeline" />}

      {data.data && model && (
        <>
          {data.data.results.length === 0 && <Notice testId="timeline-no-devices">No devices enrolled for this member.</Notice>}
          {shown.map((r) =>
            r.error ? (
              <div key={r.device.deviceId} className="alert alert-error" role="alert" data-testid="error">
                {r.device.name || r.device.deviceId}: {errorMessage(r.error)}
              </div>
            ) : r.truncated ? (
              <Notice key={r.device.deviceId}>{r.device.name || r.device.deviceId}: more events than one answer holds; the day is cut short.</Notice>
            ) : null,
          )}
          {shown.length > 0 && model.spans.length === 0 && (
            <Notice testId="timeline-empty">No timeline events on this day (the devices' ActivityWatch watchers uploaded none).</Notice>
          )}
          <Card testId="timeline-card" wide>
            <ChartView config={chart} height={Math.max(140, 70 + model.rows.length * 44)} testId="timeline-chart" label={`Timeline of ${nameOf(person)} on ${day}`} />
            {model.legend.length > 0 && (
              <ul className="legend" data-testid="timeline-legend">
                {model.legend.map(([name, color]) => (
                  <li key={name}>
                    <span className="swatch" style={{ background: color }} />
                    {name}
                  </li>
                ))}
              </ul>
            )}
          </Card>
          {model.spans.length > 0 && (
            <Card title={`Events (${model.spans.length})`} wide>
              <details>
                <summary>Show the events with their titles</summary>
                <div className="table-wrap" tabIndex={0}>
                  <table data-testid="timeline-table">
                    <thead>
                      <tr>
                        <th>Start</th>
                        <th className="num">Length</th>
                        <th>Where</th>
                        <th>Category</th>
                        <th>App</th>
                        <th>Title</th>
                      </tr>
                    </thead>
                    <tbody>
                      {model.spans.slice(0, 1000).map((s, i) => (
                        <tr key={i}>
                          <td>{clock(s.start, timeZone, true)}</td>
                          <td className="num">{duration(s.end - s.start)}</td>
                          <td>{s.row}</td>
                          <td>
                            <span className="swatch" style={{ background: s.color }} />
                            {s.kind}
                          </td>
                          <td>{s.app}</td>
                          <td className="title-cell">{s.title}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
                {model.spans.length > 1000 && <p className="muted small">The first 1000 events are listed.</p>}
              </details>
            </Card>
          )}
        </>
      )}
    </>
  );
}

function bucketLabel(type: string): string {
  switch (type) {
    case "currentwindow":
      return "Window";
    case "afkstatus":
      return "Active / idle";
    case "web.tab.current":
      return "Browser";
    default:
      return type || "events";
  }
}

// Categories come classified by the server with the org's rules in force
// (RawEvent.category), as the dashboards' are.
const UNCATEGORIZED = "Uncategorized";

function build(results: DeviceResult[], colorFor: (path: string) => string) {
  const spans: Span[] = [];
  const rows: string[] = [];
  const legend = new Map<string, string>();
  for (const r of results) {
    const deviceName = r.device.name || r.device.deviceId;
    for (const e of r.events) {
      let data: Record<string, unknown> = {};
      try {
        const parsed: unknown = e.dataJson ? JSON.parse(e.dataJson) : {};
        if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) data = parsed as Record<string, unknown>;
      } catch {
        // an erased member's data, or not JSON: shown without details
      }
      const row = results.length > 1 ? `${deviceName} · ${bucketLabel(e.bucketType)}` : bucketLabel(e.bucketType);
      if (!rows.includes(row)) rows.push(row);
      const start = Number(e.startUnixUs / 1000n);
      const end = Math.max(start + 1, Number(e.endUnixUs / 1000n));
      const str = (k: string) => (typeof data[k] === "string" ? (data[k] as string) : "");
      let kind: string;
      let color: string;
      if (e.bucketType === "afkstatus") {
        const idle = str("status") === "afk";
        kind = idle ? "Idle" : "Active";
        color = idle ? IDLE_COLOR : ACTIVE_COLOR;
      } else if (e.bucketType === "currentwindow" || e.bucketType === "web.tab.current") {
        kind = e.category.length ? e.category.join(" > ") : UNCATEGORIZED;
        color = colorFor(kind);
      } else {
        kind = e.bucketType || "event";
        color = "#64748b";
      }
      legend.set(kind, color);
      spans.push({
        row,
        start,
        end,
        color,
        kind,
        app: str("app") || (e.bucketType === "web.tab.current" ? "browser" : ""),
        title: str("title") || str("url") || str("file"),
        device: deviceName,
        bucket: e.bucketId,
      });
    }
  }
  spans.sort((a, b) => a.start - b.start);
  const order = (k: string) => (k === "Active" ? 0 : k === "Idle" ? 1 : k === UNCATEGORIZED ? 3 : 2);
  const legendList = [...legend.entries()].sort((a, b) => order(a[0]) - order(b[0]) || a[0].localeCompare(b[0]));
  return { spans, rows, legend: legendList };
}

function timelineChart(spans: Span[], rows: string[], min: number, max: number, timeZone: string): ChartConfiguration {
  const labels = rows.length ? rows : ["No events"];
  const stepHours = max - min > 12 * HOUR ? 2 : 1;
  return {
    type: "bar",
    data: {
      labels,
      datasets: [
        {
          label: "Timeline",
          data: spans.map((s) => ({ x: [s.start, s.end], y: s.row })) as never,
          backgroundColor: spans.map((s) => s.color),
          borderWidth: 0,
          borderSkipped: false,
          barPercentage: 0.9,
          categoryPercentage: 0.9,
          minBarLength: 1,
        },
      ],
    },
    options: {
      indexAxis: "y",
      scales: {
        x: {
          type: "linear",
          min,
          max,
          afterBuildTicks: (axis: Scale) => {
            const ticks = [];
            for (let t = min; t <= max; t += stepHours * HOUR) ticks.push({ value: t });
            axis.ticks = ticks;
          },
          ticks: { callback: (v) => clock(Number(v), timeZone), autoSkip: true, maxRotation: 0 },
        },
        y: { ticks: { autoSkip: false } },
      },
      plugins: {
        legend: { display: false },
        tooltip: {
          callbacks: {
            title: (items) => {
              const s = spans[items[0]?.dataIndex ?? -1];
              return s ? `${clock(s.start, timeZone, true)}–${clock(s.end, timeZone, true)} (${duration(s.end - s.start)})` : "";
            },
            label: (item) => {
              const s = spans[item.dataIndex];
              if (!s) return "";
              return [s.kind, s.app, s.title].filter(Boolean).join(" · ");
            },
          },
        },
      },
    },
  };
}

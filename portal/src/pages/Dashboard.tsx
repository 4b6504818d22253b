import { useMemo, useState } from "react";
import type { ChartConfiguration } from "chart.js";
import { activity, can } from "../api";
import { readAfter } from "../freshness";
import { ACTIVE_COLOR, ChartView, IDLE_COLOR } from "../components/ChartView";
import { Card, ErrorAlert, Loading, Notice, useAsync } from "../components/ui";
import type { DashboardSummary } from "../gen/trackhrs/activity/v1/activity_pb";
import { useOrg } from "../org";
import { navigate } from "../router";
import { daysBetween, duration, hours, thisWeek, today } from "../time";

type Mode = "today" | "week" | "custom";

export function DashboardPage() {
  const { org, orgError, session, timeZone, members, nameOf, categoryColor } = useOrg();
  const team = can(session.role).seeTeam;
  const [mode, setMode] = useState<Mode>("today");
  const [custom, setCustom] = useState<{ from: string; to: string } | null>(null);

  if (orgError && !org) return <ErrorAlert error={orgError} />;
  if (!org) return <Loading what="Loading the organization" />;

  const now = today(timeZone);
  const week = thisWeek(timeZone, org.settings?.workWeek ?? []);
  const range = mode === "today" ? { from: now, to: now } : mode === "week" ? week : (custom ?? { from: week.from, to: now });

  return (
    <>
      <div className="page-head">
        <h1>{team ? "Team dashboard" : "My dashboard"}</h1>
        <div className="range" role="group" aria-label="Range" data-testid="range">
          <button type="button" className={mode === "today" ? "seg on" : "seg"} data-testid="range-today" onClick={() => setMode("today")}>
            Today
          </button>
          <button type="button" className={mode === "week" ? "seg on" : "seg"} data-testid="range-week" onClick={() => setMode("week")}>
            This week
          </button>
          <button
            type="button"
            className={mode === "custom" ? "seg on" : "seg"}
            data-testid="range-custom"
            onClick={() => {
              setCustom((c) => c ?? { from: range.from, to: range.to });
              setMode("custom");
            }}
          >
            Dates
          </button>
          {mode === "custom" && (
            <span className="dates">
              <input
                type="date"
                aria-label="From"
                data-testid="range-from"
                value={range.from}
                max={range.to}
                onChange={(e) => e.target.value && setCustom({ from: e.target.value, to: range.to })}
              />
              <span aria-hidden="true">–</span>
              <input
                type="date"
                aria-label="To"
                data-testid="range-to"
                value={range.to}
                min={range.from}
                onChange={(e) => e.target.value && setCustom({ from: range.from, to: e.target.value })}
              />
            </span>
          )}
        </div>
      </div>
      <p className="muted small" data-testid="range-label">
        {range.from === range.to ? range.from : `${range.from} to ${range.to}`} · {timeZone}
      </p>
      <DashboardBody
        orgId={session.orgId}
        from={range.from}
        to={range.to}
        team={team}
        selfId={session.personId}
        members={members.filter((m) => m.active && !m.invitationPending).map((m) => m.personId)}
        nameOf={nameOf}
        timeZone={timeZone}
        categoryColor={categoryColor}
      />
    </>
  );
}

function DashboardBody(props: {
  orgId: string;
  from: string;
  to: string;
  team: boolean;
  selfId: string;
  members: string[];
  nameOf: (id: string) => string;
  timeZone: string;
  categoryColor: (path: string) => string;
}) {
  const { orgId, from, to, team, selfId, nameOf, categoryColor } = props;
  const valid = from <= to;
  const dash = useAsync(
    () => (valid ? activity.getDashboardSummary({ orgId, from, to, minPosition: readAfter() }) : Promise.reject(new Error("The first day is after the last."))),
    [orgId, from, to],
  );
  const memberKey = props.members.join(",");
  const model = useMemo(
    () => (dash.data ? summarise(dash.data, team ? props.members : [selfId], nameOf, from, to, categoryColor) : null),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [dash.data, memberKey, team, selfId, nameOf, from, to, categoryColor],
  );

  if (dash.error) return <ErrorAlert error={dash.error} />;
  if (!model || !dash.data) return <Loading what="Loading the dashboard" />;

  const openTimeline = (personId: string) =>
    navigate("timeline", { person: personId, day: to > today(props.timeZone) ? today(props.timeZone) : to });

  return (
    <div data-testid="dashboard" data-from={from} data-to={to} data-position={String(dash.data.position)} data-loading={dash.loading}>
      <div className="stats">
        <Stat label="Active" value={duration(model.totalActive)} ms={model.totalActive} testId="total-active" />
        <Stat label="Idle" value={duration(model.totalIdle)} ms={model.totalIdle} testId="total-idle" />
        <Stat label={team ? "Members with time" : "Days with time"} value={String(team ? model.membersWithTime : model.byDay.filter((d) => d.activeMs + d.idleMs > 0).length)} />
        <Stat label="Productivity" value={model.totalActive > 0 ? dash.data.productivity.toFixed(0) : "–"} testId="total-productivity" />
      </div>
      {model.totalActive + model.totalIdle === 0 && <Notice testId="no-time">No time recorded in this range.</Notice>}
      <div className="grid">
        <Card title={team ? "Time per member" : "Active and idle"} testId="chart-members">
          <ChartView config={model.memberChart} height={Math.max(160, 48 + model.rows.length * 34)} testId="chart-canvas" label="Active and idle hours per member" />
        </Card>
        <Card title="Time per day" testId="chart-days">
          <ChartView config={model.dayChart} testId="chart-canvas" label="Active and idle hours per day" />
        </Card>
        <Card title="By category" testId="chart-categories">
          {model.categories.length ? (
            <>
              <ChartView config={model.categoryChart} testId="chart-canvas" label="Active time by category" />
              <ul className="legend" data-testid="category-legend">
                {model.categories.map(([name, ms]) => (
                  <li key={name} data-testid="category-legend-item" data-category={name} data-ms={ms}>
                    <span className="swatch" style={{ background: categoryColor(name) }} aria-hidden="true" />
                    {name} <span className="muted">{duration(ms)}</span>
                  </li>
                ))}
              </ul>
            </>
          ) : (
            <p className="muted">No categories yet.</p>
          )}
        </Card>
        <Card title="Top applications" testId="chart-apps">
          {model.apps.length ? (
            <>
              <ChartView config={model.appChart} testId="chart-canvas" label="Active hours of the top applications" />
              <ul className="legend" data-testid="app-legend">
                {model.apps.map(([name, ms]) => (
                  <li key={name} data-testid="app-legend-item" data-app={name} data-ms={ms}>
                    {name} <span className="muted">{duration(ms)}</span>
                  </li>
                ))}
              </ul>
            </>
          ) : (
            <p className="muted">No applications yet.</p>
          )}
        </Card>
      </div>

      <Card title={team ? "Members" : "Totals"} testId="member-table-card" wide>
        <div className="table-wrap" tabIndex={0}>
          <table data-testid="member-table">
            <thead>
              <tr>
                <th>Member</th>
                <th className="num">Active</th>
                <th className="num">Idle</th>
                <th className="num">Productivity</th>
                <th className="num">Days</th>
                <th className="num" title="Time the member deleted on their device after it was recorded: counted here only, without details">
                  Removed
                </th>
              </tr>
            </thead>
            <tbody>
              {model.rows.map((r) => (
                <tr
                  key={r.personId}
                  data-testid="member-row"
                  data-person-id={r.personId}
                  data-active-ms={r.activeMs}
                  data-idle-ms={r.idleMs}
                  data-days={r.days}
                  data-removed-ms={r.removedMs}
                  className="clickable"
                  onClick={() => openTimeline(r.personId)}
                >
                  <td>
                    <a
                      href={`#/timeline?person=${encodeURIComponent(r.personId)}`}
                      data-testid="member-link"
                      onClick={(e) => {
                        e.preventDefault();
                        e.stopPropagation();
                        openTimeline(r.personId);
                      }}
                    >
                      {r.name}
                    </a>
                  </td>
                  <td className="num">{duration(r.activeMs)}</td>
                  <td className="num">{duration(r.idleMs)}</td>
                  <td className="num">{r.activeMs > 0 ? r.productivity.toFixed(0) : "–"}</td>
                  <td className="num">{r.days}</td>
                  <td className="num">{r.removedMs > 0 ? duration(r.removedMs) : "–"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Card>

      <Card title="Details" wide testId="day-table-card">
        <MemberDays orgId={orgId} from={from} to={to} team={team} nameOf={nameOf} />
      </Card>

      <p className="muted small" data-testid="dashboard-rules-version">
        Rules version {dash.data.rulesVersion} · classifier {dash.data.classifierVersion}
      </p>
    </div>
  );
}

interface DetailsProps {
  orgId: string;
  from: string;
  to: string;
  team: boolean;
  nameOf: (id: string) => string;
}

/** Each member's days and top window titles: read (the whole per-day breakdown) only when opened. */
function MemberDays(props: DetailsProps) {
  const [open, setOpen] = useState(false);
  return (
    <details onToggle={(e) => setOpen((e.target as HTMLDetailsElement).open)} data-testid="day-details">
      <summary>Each member's days and top window titles</summary>
      {open && <MemberDaysTable {...props} />}
    </details>
  );
}

function MemberDaysTable({ orgId, from, to, team, nameOf }: DetailsProps) {
  const days = useAsync(() => activity.getDashboard({ orgId, from, to, minPosition: readAfter() }), [orgId, from, to]);
  if (days.error) return <ErrorAlert error={days.error} />;
  if (!days.data) return <Loading what="Loading each member's days" />;
  const rows = [...days.data.days].sort((a, b) => b.day.localeCompare(a.day) || nameOf(a.personId).localeCompare(nameOf(b.personId)));
  return (
    <div className="table-wrap" tabIndex={0}>
      <table data-testid="day-table">
        <thead>
          <tr>
            <th>Day</th>
            <th>Member</th>
            <th className="num">Active</th>
            <th className="num">Idle</th>
            <th>Top category</th>
            <th>Top app</th>
            <th className="num" title="Time the member deleted on their device after it was recorded: counted here only, without details">
              Removed
            </th>
          </tr>
        </thead>
        <tbody>
          {rows.map((d) => (
            <tr key={`${d.personId}/${d.day}`} data-testid="day-row" data-removed-ms={String(d.removedMs)}>
              <td>{d.day}</td>
              <td>{nameOf(d.personId)}</td>
              <td className="num">{duration(Number(d.activeMs))}</td>
              <td className="num">{duration(Number(d.idleMs))}</td>
              <td>{top(d.categories)}</td>
              <td>{top(d.apps)}</td>
              <td className="num">{d.removedMs > 0n ? duration(Number(d.removedMs)) : "–"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {days.data.topTitles.length > 0 && (
        <>
          <h3>Top window titles</h3>
          <table data-testid="titles-table">
            <thead>
              <tr>
                {team && <th>Member</th>}
                <th className="col-app">App</th>
                <th>Title</th>
                <th className="num">Time</th>
              </tr>
            </thead>
            <tbody>
              {[...days.data.topTitles]
                .sort((a, b) => Number(b.ms - a.ms))
                .slice(0, 30)
                .map((t, i) => (
                  <tr key={i} data-testid="title-row" data-person-id={t.personId} data-ms={String(t.ms)}>
                    {team && <td>{nameOf(t.personId)}</td>}
                    <td className="col-app">{t.app}</td>
                    <td className="title-cell">
                      <span className="narrow-only muted small">{t.app}: </span>
                      {t.title}
                    </td>
                    <td className="num">{duration(Number(t.ms))}</td>
                  </tr>
                ))}
            </tbody>
          </table>
        </>
      )}
    </div>
  );
}

function Stat({ label, value, ms, testId }: { label: string; value: string; ms?: number; testId?: string }) {
  return (
    <div className="stat" data-testid={testId} data-ms={ms}>
      <div className="stat-value">{value}</div>
      <div className="stat-label">{label}</div>
    </div>
  );
}

function top(list: { name: string; activeMs: bigint }[]): string {
  let best: { name: string; activeMs: bigint } | undefined;
  for (const x of list) if (!best || x.activeMs > best.activeMs) best = x;
  return best ? best.name : "–";
}

interface MemberRow {
  personId: string;
  name: string;
  activeMs: number;
  idleMs: number;
  productivity: number;
  days: number;
  removedMs: number;
}

function summarise(summary: DashboardSummary, include: string[], nameOf: (id: string) => string, from: string, to: string, colorFor: (path: string) => string) {
  const byMember = new Map<string, MemberRow>();
  for (const id of include) byMember.set(id, { personId: id, name: nameOf(id), activeMs: 0, idleMs: 0, productivity: 0, days: 0, removedMs: 0 });
  for (const m of summary.members) {
    byMember.set(m.personId, {
      personId: m.personId,
      name: nameOf(m.personId),
      activeMs: Number(m.activeMs),
      idleMs: Number(m.idleMs),
      productivity: m.productivity,
      days: m.days,
      removedMs: Number(m.removedMs),
    });
  }
  const days = daysBetween(from, to);
  const perDay = new Map(summary.days.map((d) => [d.day, d]));
  const dayActive = days.map((d) => Number(perDay.get(d)?.activeMs ?? 0n));
  const dayIdle = days.map((d) => Number(perDay.get(d)?.idleMs ?? 0n));
  const rows = [...byMember.values()].sort((a, b) => b.activeMs - a.activeMs || a.name.localeCompare(b.name));
  const totalActive = rows.reduce((s, r) => s + r.activeMs, 0);
  const totalIdle = rows.reduce((s, r) => s + r.idleMs, 0);
  const cats: [string, number][] = summary.categories.map((c) => [c.name, Number(c.activeMs)] as [string, number]).filter(([, ms]) => ms > 0);
  const topApps: [string, number][] = summary.apps.map((a) => [a.name, Number(a.activeMs)] as [string, number]).filter(([, ms]) => ms > 0);

  const hoursAxis = { beginAtZero: true, stacked: true, title: { display: true, text: "hours" } };
  const tooltipHours = {
    callbacks: {
      label: (ctx: { dataset: { label?: string }; raw: unknown }) => `${ctx.dataset.label ?? ""}: ${duration(Number(ctx.raw) * 3_600_000)}`,
    },
  };

  const memberChart: ChartConfiguration = {
    type: "bar",
    data: {
      labels: rows.map((r) => r.name),
      datasets: [
        { label: "Active", data: rows.map((r) => hours(r.activeMs)), backgroundColor: ACTIVE_COLOR },
        { label: "Idle", data: rows.map((r) => hours(r.idleMs)), backgroundColor: IDLE_COLOR },
      ],
    },
    options: {
      indexAxis: "y",
      scales: { x: hoursAxis, y: { stacked: true } },
      plugins: { tooltip: tooltipHours as never },
    },
  };
  const dayChart: ChartConfiguration = {
    type: "bar",
    data: {
      labels: days.map((d) => d.slice(5)),
      datasets: [
        { label: "Active", data: dayActive.map(hours), backgroundColor: ACTIVE_COLOR },
        { label: "Idle", data: dayIdle.map(hours), backgroundColor: IDLE_COLOR },
      ],
    },
    options: { scales: { y: hoursAxis, x: { stacked: true } }, plugins: { tooltip: tooltipHours as never } },
  };
  const categoryChart: ChartConfiguration = {
    type: "doughnut",
    data: {
      labels: cats.map(([n]) => n),
      datasets: [{ data: cats.map(([, ms]) => hours(ms)), backgroundColor: cats.map(([n]) => colorFor(n)) }],
    },
    options: {
      plugins: {
        // The legend is the list under the chart (names, times, and readable without the canvas).
        legend: { display: false },
        tooltip: { callbacks: { label: (ctx) => `${ctx.label}: ${duration(Number(ctx.raw) * 3_600_000)}` } },
      },
    },
  };
  const appChart: ChartConfiguration = {
    type: "bar",
    data: {
      labels: topApps.map(([n]) => n),
      datasets: [{ label: "Active", data: topApps.map(([, ms]) => hours(ms)), backgroundColor: "#2563eb" }],
    },
    options: {
      indexAxis: "y",
      scales: { x: { beginAtZero: true, title: { display: true, text: "hours" } } },
      plugins: { legend: { display: false }, tooltip: tooltipHours as never },
    },
  };
  return {
    rows,
    totalActive,
    totalIdle,
    membersWithTime: rows.filter((r) => r.activeMs + r.idleMs > 0).length,
    byDay: days.map((d, i) => ({ day: d, activeMs: dayActive[i]!, idleMs: dayIdle[i]! })),
    categories: cats,
    apps: topApps,
    memberChart,
    dayChart,
    categoryChart,
    appChart,
  };
}

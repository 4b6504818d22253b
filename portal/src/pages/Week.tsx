import { useState, type FormEvent } from "react";
import { runCommand, work } from "../api";
import { Card, ErrorAlert, Loading, Notice, useAction, useAsync } from "../components/ui";
import { EntryKind, type Catalog, type WeekView } from "../gen/trackhrs/work/v1/work_pb";
import { useOrg } from "../org";
import { navigate } from "../router";
import { addDays, atLocal, clock, daysBetween, dayOf, hours, today } from "../time";

const SOURCE_NAMES: Record<string, string> = {
  rule: "by the rules",
  assigned: "assigned",
  manual: "manual",
  late: "arrived after approval",
};

/** "Website / Build" of a project and task id. */
export function taskName(catalog: Catalog | undefined, projectId: string, taskId: string): string {
  if (!projectId) return "Unattributed";
  const p = catalog?.projects.find((x) => x.projectId === projectId);
  const t = p?.tasks.find((x) => x.taskId === taskId);
  return `${p?.name ?? projectId}${taskId ? ` / ${t?.name ?? taskId}` : ""}`;
}

/** A week's status, decision and time per day and task (any member's). */
export function WeekDetails({ view, catalog }: { view: WeekView; catalog: Catalog | undefined }) {
  const { timeZone, nameOf } = useOrg();
  const w = view.week;
  if (!w) return null;
  const days = daysBetween(w.weekStart, addDays(w.weekStart, 6));
  const rows = new Map<string, Map<string, number>>();
  for (const t of view.time) {
    const key = `${t.projectId}\t${t.taskId}\t${t.source}`;
    const row = rows.get(key) ?? new Map<string, number>();
    row.set(t.day, (row.get(t.day) ?? 0) + Number(t.ms));
    rows.set(key, row);
  }
  return (
    <div data-testid="week-details" data-status={w.status} data-total-ms={String(w.totalMs)} data-late-ms={String(w.lateMs)}>
      <p>
        <span className={`tag ${w.status === "approved" ? "tag-on" : w.status === "submitted" ? "tag-wait" : "tag-off"}`} data-testid="week-status">
          {w.status}
        </span>{" "}
        <span data-testid="week-total">{hours(w.totalMs)} h counted</span>
        {w.lateMs > 0n && (
          <span className="tag tag-wait" data-testid="week-late">
            {hours(w.lateMs)} h arrived after approval
          </span>
        )}
      </p>
      {w.decision && (
        <p data-testid="week-decision">
          {w.decision === "approved" ? "Approved" : w.decision === "rejected" ? "Rejected" : "Reopened"} by {nameOf(w.decidedBy)}
          {w.comment && (
            <>
              : <q data-testid="week-comment">{w.comment}</q>
            </>
          )}
        </p>
      )}
      {rows.size === 0 ? (
        <p className="muted" data-testid="week-empty">
          No time in this week yet.
        </p>
      ) : (
        <div className="table-wrap" tabIndex={0}>
          <table data-testid="week-table">
            <thead>
              <tr>
                <th>Project / task</th>
                {days.map((d) => (
                  <th key={d} className="num">
                    {d.slice(5)}
                  </th>
                ))}
                <th className="num">Total</th>
              </tr>
            </thead>
            <tbody>
              {[...rows.entries()].map(([key, byDay]) => {
                const [projectId = "", taskId = "", source = ""] = key.split("\t");
                const sum = [...byDay.values()].reduce((a, b) => a + b, 0);
                return (
                  <tr key={key} data-testid="week-row" data-project-id={projectId} data-source={source} data-ms={sum}>
                    <td>
                      {taskName(catalog, projectId, taskId)} <span className="muted small">({SOURCE_NAMES[source] ?? source})</span>
                    </td>
                    {days.map((d) => (
                      <td key={d} className="num">
                        {byDay.get(d) ? hours(byDay.get(d)!) : ""}
                      </td>
                    ))}
                    <td className="num">{hours(sum)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <p className="muted small">Times in {timeZone}.</p>
    </div>
  );
}

/**
 * My week: time by what the rules attributed, the member's entries, the
 * stretches of activity to assign to a task, manual entries, and submitting
 * the week. A submitted or approved week shows where it stands.
 */
export function WeekPage({ params }: { params: URLSearchParams }) {
  const { session, timeZone } = useOrg();
  const date = params.get("date") || today(timeZone);
  const [minPosition, setMinPosition] = useState(0n);
  const catalog = useAsync(() => work.getCatalog({ orgId: session.orgId, minPosition: 0n }), [session.orgId]);
  const week = useAsync(() => work.getWeek({ orgId: session.orgId, personId: "", date, minPosition }), [session.orgId, date, minPosition]);
  const act = useAction();
  const v = week.data;
  const w = v?.week;
  // While another week loads, nothing is sent for the one still shown.
  const open = w?.status === "open" && !week.loading;
  const changed = (position: bigint | undefined) => position && setMinPosition(position);
  const go = (d: string) => navigate("week", { date: d });

  const remove = (entryId: string) =>
    void act.run(async () => {
      const r = await runCommand(`remove:${entryId}`, (commandId) => work.removeEntry({ commandId, orgId: session.orgId, date: w?.weekStart ?? date, entryId }));
      changed(r.position);
    });
  const submit = () =>
    void act.run(async () => {
      const weekStart = w?.weekStart ?? date;
      const r = await runCommand(`submit:${weekStart}`, (commandId) => work.submitWeek({ commandId, orgId: session.orgId, date: weekStart }));
      changed(r.position);
    });

  return (
    <>
      <div className="page-head">
        <h1>My week</h1>
        <div className="range">
          <button type="button" data-testid="week-prev" onClick={() => go(addDays(w?.weekStart ?? date, -7))}>
            ← Previous
          </button>
          <span data-testid="week-range">{w ? `${w.weekStart} – ${addDays(w.weekStart, 6)}` : date}</span>
          <button type="button" data-testid="week-next" onClick={() => go(addDays(w?.weekStart ?? date, 7))}>
            Next →
          </button>
        </div>
      </div>
      <Card
        title="Time"
        testId="week-card"
        wide
        actions={
          open && (
            <button type="button" className="primary" data-testid="week-submit" disabled={act.busy} onClick={submit}>
              Submit week
            </button>
          )
        }
      >
        <ErrorAlert error={week.error} testId="week-error" />
        <ErrorAlert error={act.error} testId="week-action-error" />
        {week.loading && !v ? <Loading what="Loading the week" /> : v && <WeekDetails view={v} catalog={catalog.data} />}
        {w && w.status !== "open" && <Notice testId="week-locked">{w.status === "approved" ? "This week is approved and locked." : "This week is submitted: nothing in it changes until it is decided."}</Notice>}
      </Card>
      {v && (
        <Card title="Entries" testId="entries-card" wide>
          {v.entries.length === 0 ? (
            <p className="muted" data-testid="entries-empty">
              No entries: the rules attribute the activity.
            </p>
          ) : (
            <div className="table-wrap" tabIndex={0}>
              <table data-testid="entries-table">
                <thead>
                  <tr>
                    <th>When</th>
                    <th>Kind</th>
                    <th>Project / task</th>
                    <th>Note</th>
                    {open && <th className="actions-col">Actions</th>}
                  </tr>
                </thead>
                <tbody>
                  {v.entries.map((e) => (
                    <tr key={e.entryId} data-testid="entry-row" data-entry-id={e.entryId}>
                      <td className="nowrap">
                        {dayOf(Number(e.startMs), timeZone)} {clock(Number(e.startMs), timeZone)}–{clock(Number(e.endMs), timeZone)}
                      </td>
                      <td>{e.kind === EntryKind.MANUAL ? "Manual" : "Assigned activity"}</td>
                      <td>{taskName(catalog.data, e.projectId, e.taskId)}</td>
                      <td>{e.note || <span className="muted">–</span>}</td>
                      {open && (
                        <td className="actions-col">
                          <button type="button" data-testid="entry-remove" disabled={act.busy} onClick={() => remove(e.entryId)}>
                            Remove
                          </button>
                        </td>
                      )}
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </Card>
      )}
      {v && open && catalog.data && (
        <>
          <StretchesCard key={`stretches-${w?.weekStart}`} view={v} catalog={catalog.data} onChanged={changed} />
          <ManualEntryCard key={`manual-${w?.weekStart}`} catalog={catalog.data} weekStart={w?.weekStart ?? date} onChanged={changed} />
        </>
      )}
    </>
  );
}

/** Active projects' tasks as options "project\ttask". */
function TaskOptions({ catalog }: { catalog: Catalog }) {
  return (
    <>
      <option value="">Choose a task</option>
      {catalog.projects
        .filter((p) => !p.archived)
        .flatMap((p) =>
          p.tasks.map((t) => (
            <option key={`${p.projectId}\t${t.taskId}`} value={`${p.projectId}\t${t.taskId}`}>
              {p.name} / {t.name}
            </option>
          )),
        )}
    </>
  );
}

function StretchesCard({ view, catalog, onChanged }: { view: WeekView; catalog: Catalog; onChanged: (p: bigint | undefined) => void }) {
  const { session, timeZone } = useOrg();
  const [choice, setChoice] = useState<Record<string, string>>({});
  // A part of a stretch (a split): its times as edited, else the whole.
  const [parts, setParts] = useState<Record<string, { from?: string; to?: string }>>({});
  const act = useAction();
  const assign = (stretchStart: bigint, stretchEnd: bigint) =>
    void act.run(async () => {
      const key = String(stretchStart);
      const [projectId = "", taskId = ""] = (choice[key] ?? "").split("\t");
      const part = parts[key] ?? {};
      const start = part.from ? BigInt(atLocal(dayOf(Number(stretchStart), timeZone), part.from, timeZone)) : stretchStart;
      const end = part.to ? BigInt(atLocal(dayOf(Number(stretchEnd), timeZone), part.to, timeZone)) : stretchEnd;
      const r = await runCommand(`assign:${start}:${end}:${projectId}:${taskId}`, (commandId) =>
        work.addEntry({ commandId, orgId: session.orgId, kind: EntryKind.ASSIGNMENT, projectId, taskId, startMs: start, endMs: end, note: "" }),
      );
      onChanged(r.result?.position);
    });
  const setPart = (key: string, edge: "from" | "to", value: string) => setParts({ ...parts, [key]: { ...parts[key], [edge]: value } });
  if (view.stretches.length === 0) return null;
  return (
    <Card title="Assign activity to a task" testId="stretches-card" wide>
      <p className="muted small">Stretches of your activity this week; assigning one, or a part of it (change its times to split it), overrides the rules for that time.</p>
      <div className="table-wrap" tabIndex={0}>
        <table data-testid="stretches-table">
          <thead>
            <tr>
              <th>When</th>
              <th>Mostly</th>
              <th className="num">Active</th>
              <th>Task</th>
            </tr>
          </thead>
          <tbody>
            {view.stretches.map((s) => (
              <tr key={String(s.startMs)} data-testid="stretch-row">
                <td className="nowrap">
                  {dayOf(Number(s.startMs), timeZone)} {clock(Number(s.startMs), timeZone)}–{clock(Number(s.endMs), timeZone)}
                </td>
                <td>{s.app}</td>
                <td className="num">{hours(s.activeMs)} h</td>
                <td>
                  <div className="inline-form">
                    <input
                      type="time"
                      aria-label="From"
                      data-testid="stretch-from"
                      value={parts[String(s.startMs)]?.from ?? clock(Number(s.startMs), timeZone)}
                      onChange={(e) => setPart(String(s.startMs), "from", e.target.value)}
                    />
                    <input
                      type="time"
                      aria-label="To"
                      data-testid="stretch-to"
                      value={parts[String(s.startMs)]?.to ?? clock(Number(s.endMs), timeZone)}
                      onChange={(e) => setPart(String(s.startMs), "to", e.target.value)}
                    />
                    <select aria-label="Task for this stretch" data-testid="stretch-task" value={choice[String(s.startMs)] ?? ""} onChange={(e) => setChoice({ ...choice, [String(s.startMs)]: e.target.value })}>
                      <TaskOptions catalog={catalog} />
                    </select>
                    <button type="button" data-testid="stretch-assign" disabled={act.busy || !choice[String(s.startMs)]} onClick={() => assign(s.startMs, s.endMs)}>
                      Assign
                    </button>
                  </div>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <ErrorAlert error={act.error} testId="stretch-error" />
    </Card>
  );
}

function ManualEntryCard({ catalog, weekStart, onChanged }: { catalog: Catalog; weekStart: string; onChanged: (p: bigint | undefined) => void }) {
  const { session, timeZone } = useOrg();
  const [day, setDay] = useState(weekStart);
  const [from, setFrom] = useState("09:00");
  const [to, setTo] = useState("10:00");
  const [task, setTask] = useState("");
  const [note, setNote] = useState("");
  const act = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void act.run(async () => {
      const [projectId = "", taskId = ""] = task.split("\t");
      const startMs = BigInt(atLocal(day, from, timeZone));
      const endMs = BigInt(atLocal(day, to, timeZone));
      const r = await runCommand(`manual:${day}:${from}:${to}:${task}`, (commandId) =>
        work.addEntry({ commandId, orgId: session.orgId, kind: EntryKind.MANUAL, projectId, taskId, startMs, endMs, note: note.trim() }),
      );
      setNote("");
      onChanged(r.result?.position);
    });
  };
  return (
    <Card title="Add time the agent did not see" testId="manual-card" wide>
      <form className="inline-form" onSubmit={submit} data-testid="manual-form">
        <label>
          Day
          <input type="date" data-testid="manual-day" value={day} min={weekStart} max={addDays(weekStart, 6)} onChange={(e) => setDay(e.target.value)} required />
        </label>
        <label>
          From
          <input type="time" data-testid="manual-from" value={from} onChange={(e) => setFrom(e.target.value)} required />
        </label>
        <label>
          To
          <input type="time" data-testid="manual-to" value={to} onChange={(e) => setTo(e.target.value)} required />
        </label>
        <label>
          Task
          <select data-testid="manual-task" value={task} onChange={(e) => setTask(e.target.value)} required>
            <TaskOptions catalog={catalog} />
          </select>
        </label>
        <label>
          Note
          <input data-testid="manual-note" value={note} onChange={(e) => setNote(e.target.value)} maxLength={2000} placeholder="Meeting with the client" />
        </label>
        <button type="submit" className="primary" data-testid="manual-submit" disabled={act.busy}>
          Add
        </button>
      </form>
      <ErrorAlert error={act.error} testId="manual-error" />
    </Card>
  );
}

import { useState, type FormEvent } from "react";
import { can, runCommand, work } from "../api";
import { Card, ErrorAlert, Loading, useAction, useAsync } from "../components/ui";
import type { Catalog, Project, ProjectTimeRow } from "../gen/trackhrs/work/v1/work_pb";
import { useOrg } from "../org";
import { addDays, hours, thisWeek } from "../time";

/**
 * Projects and budgets: every member sees the projects, their tasks and the
 * budget used; owners, admins and managers add clients, projects and tasks
 * and archive projects; owners and admins organize teams. Below: project
 * time for a range, billable and not, per project and member, with a CSV
 * export of the same rows.
 */
export function ProjectsPage() {
  const { session, org, timeZone } = useOrg();
  const may = can(session.role);
  const [minPosition, setMinPosition] = useState(0n);
  const catalog = useAsync(() => work.getCatalog({ orgId: session.orgId, minPosition }), [session.orgId, minPosition]);
  const changed = (position: bigint | undefined) => {
    if (position) setMinPosition(position);
  };
  const c = catalog.data;

  return (
    <>
      <div className="page-head">
        <h1>Projects</h1>
      </div>
      <Card title="Projects and budgets" testId="projects-card" wide>
        <ErrorAlert error={catalog.error} testId="projects-error" />
        {catalog.loading && !c ? <Loading what="Loading the projects" /> : c && <ProjectTable catalog={c} manage={may.manageProjects} orgId={session.orgId} onChanged={changed} />}
      </Card>
      {may.manageProjects && c && <NewProjectCard catalog={c} orgId={session.orgId} onChanged={changed} />}
      {may.manageTeams && c && <TeamsCard catalog={c} orgId={session.orgId} onChanged={changed} />}
      {c && <ProjectTimeCard catalog={c} orgId={session.orgId} range={thisWeek(timeZone, org?.settings?.workWeek ?? [])} />}
    </>
  );
}

/** Minor units as money with two decimals ("1,234.50"). */
function money(minor: bigint): string {
  return (Number(minor) / 100).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function moneyUsed(p: Project): string {
  const budget = p.budget?.moneyMinor ?? 0n;
  if (!p.budget?.rateMinor) return "–";
  return budget > 0n ? `${money(p.bookedMoneyMinor)} of ${money(budget)}` : money(p.bookedMoneyMinor);
}

function budgetUsed(p: Project): string {
  const budget = p.budget?.hours ?? 0;
  const used = hours(p.bookedMs);
  if (!budget) return `${used} h`;
  return `${used} of ${budget} h (${Math.round((Number(p.bookedMs) / (budget * 3_600_000)) * 100)} %)`;
}

function ProjectTable({ catalog, manage, orgId, onChanged }: { catalog: Catalog; manage: boolean; orgId: string; onChanged: (p: bigint | undefined) => void }) {
  const clientName = (id: string) => catalog.clients.find((c) => c.clientId === id)?.name ?? "";
  if (catalog.projects.length === 0) return <p className="muted" data-testid="projects-empty">No projects yet.</p>;
  return (
    <div className="table-wrap" tabIndex={0}>
      <table data-testid="projects-table">
        <thead>
          <tr>
            <th>Project</th>
            <th>Client</th>
            <th>Billable</th>
            <th>Budget used</th>
            <th>Money used</th>
            <th>Tasks</th>
            {manage && <th className="actions-col">Actions</th>}
          </tr>
        </thead>
        <tbody>
          {catalog.projects.map((p) => (
            <tr key={p.projectId} data-testid="project-row" data-project-id={p.projectId} data-name={p.name}>
              <td>
                {p.name} {p.archived && <span className="tag tag-off">archived</span>}
                {p.marks.length > 0 && <span className="tag tag-wait" data-testid="project-mark">{Math.max(...p.marks)} % of budget</span>}
              </td>
              <td>{clientName(p.clientId) || <span className="muted">–</span>}</td>
              <td>{p.billable ? "Yes" : "No"}</td>
              <td className="num" data-testid="project-used">{budgetUsed(p)}</td>
              <td className="num" data-testid="project-money-used" data-minor={String(p.bookedMoneyMinor)}>
                {moneyUsed(p)}
              </td>
              <td data-testid="project-tasks">{p.tasks.map((t) => t.name).join(", ") || <span className="muted">none</span>}</td>
              {manage && (
                <td className="actions-col">
                  <ProjectActions project={p} orgId={orgId} onChanged={onChanged} />
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function ProjectActions({ project, orgId, onChanged }: { project: Project; orgId: string; onChanged: (p: bigint | undefined) => void }) {
  const [task, setTask] = useState("");
  const act = useAction();
  const addTask = (e: FormEvent) => {
    e.preventDefault();
    const name = task.trim();
    void act.run(async () => {
      const r = await runCommand(`task:${project.projectId}:${name}`, (commandId) => work.addTask({ commandId, orgId, projectId: project.projectId, name }));
      setTask("");
      onChanged(r.result?.position);
    });
  };
  const archive = (archived: boolean) =>
    void act.run(async () => {
      const r = await runCommand(`archive:${project.projectId}:${archived}`, (commandId) =>
        work.changeProject({ commandId, orgId, projectId: project.projectId, change: { case: "archived", value: archived } }),
      );
      onChanged(r.position);
    });
  return (
    <div className="row-actions">
      {!project.archived && (
        <form className="inline-form" onSubmit={addTask}>
          <input aria-label={`New task of ${project.name}`} data-testid="task-name" value={task} onChange={(e) => setTask(e.target.value)} placeholder="New task" required />
          <button type="submit" data-testid="task-add" disabled={act.busy}>
            Add task
          </button>
        </form>
      )}
      <button type="button" data-testid="project-archive" disabled={act.busy} onClick={() => archive(!project.archived)}>
        {project.archived ? "Unarchive" : "Archive"}
      </button>
      <ErrorAlert error={act.error} testId="project-action-error" />
    </div>
  );
}

function NewProjectCard({ catalog, orgId, onChanged }: { catalog: Catalog; orgId: string; onChanged: (p: bigint | undefined) => void }) {
  const [name, setName] = useState("");
  const [client, setClient] = useState("");
  const [billable, setBillable] = useState(true);
  const [budgetHours, setBudgetHours] = useState("");
  const [budgetMoney, setBudgetMoney] = useState("");
  const [rate, setRate] = useState("");
  const [clientName, setClientName] = useState("");
  const project = useAction();
  const newClient = useAction();

  const createProject = (e: FormEvent) => {
    e.preventDefault();
    const n = name.trim();
    void project.run(async () => {
      const money = budgetMoney.trim() ? Math.round(Number(budgetMoney) * 100) : 0;
      const rateMinor = rate.trim() ? Math.round(Number(rate) * 100) : 0;
      const r = await runCommand(`project:${n}`, (commandId) =>
        work.createProject({
          commandId,
          orgId,
          name: n,
          clientId: client,
          billable,
          budget: { hours: Number(budgetHours || 0), moneyMinor: BigInt(money), rateMinor: BigInt(rateMinor) },
          members: [],
        }),
      );
      setName("");
      setBudgetHours("");
      setBudgetMoney("");
      setRate("");
      onChanged(r.result?.position);
    });
  };
  const createClient = (e: FormEvent) => {
    e.preventDefault();
    const n = clientName.trim();
    void newClient.run(async () => {
      const r = await runCommand(`client:${n}`, (commandId) => work.createClient({ commandId, orgId, name: n }));
      setClientName("");
      setClient(r.id);
      onChanged(r.result?.position);
    });
  };

  return (
    <Card title="New project" testId="new-project-card" wide>
      <form className="inline-form" onSubmit={createProject} data-testid="project-form">
        <label>
          Name
          <input data-testid="project-name" value={name} onChange={(e) => setName(e.target.value)} required maxLength={200} />
        </label>
        <label>
          Client
          <select data-testid="project-client" value={client} onChange={(e) => setClient(e.target.value)}>
            <option value="">No client</option>
            {catalog.clients.map((c) => (
              <option key={c.clientId} value={c.clientId}>
                {c.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          Budget (hours)
          <input data-testid="project-hours" type="number" min={0} step={1} value={budgetHours} onChange={(e) => setBudgetHours(e.target.value)} />
        </label>
        <label>
          Budget (money)
          <input data-testid="project-money" type="number" min={0} step={0.01} value={budgetMoney} onChange={(e) => setBudgetMoney(e.target.value)} />
        </label>
        <label>
          Rate per hour
          <input data-testid="project-rate" type="number" min={0} step={0.01} value={rate} onChange={(e) => setRate(e.target.value)} />
        </label>
        <label className="check">
          <input type="checkbox" data-testid="project-billable" checked={billable} onChange={(e) => setBillable(e.target.checked)} /> Billable
        </label>
        <button type="submit" className="primary" data-testid="project-submit" disabled={project.busy}>
          Create project
        </button>
      </form>
      <ErrorAlert error={project.error} testId="project-error" />
      <form className="inline-form" onSubmit={createClient} data-testid="client-form">
        <label>
          New client
          <input data-testid="client-name" value={clientName} onChange={(e) => setClientName(e.target.value)} required maxLength={200} />
        </label>
        <button type="submit" data-testid="client-submit" disabled={newClient.busy}>
          Add client
        </button>
      </form>
      <ErrorAlert error={newClient.error} testId="client-error" />
    </Card>
  );
}

function TeamsCard({ catalog, orgId, onChanged }: { catalog: Catalog; orgId: string; onChanged: (p: bigint | undefined) => void }) {
  const { members, nameOf } = useOrg();
  const [name, setName] = useState("");
  const act = useAction();
  const active = members.filter((m) => m.active);
  const leaders = active.filter((m) => m.role >= 1 && m.role <= 3);

  const create = (e: FormEvent) => {
    e.preventDefault();
    const n = name.trim();
    void act.run(async () => {
      const r = await runCommand(`team:${n}`, (commandId) => work.createTeam({ commandId, orgId, name: n }));
      setName("");
      onChanged(r.result?.position);
    });
  };
  const setManager = (teamId: string, personId: string) =>
    void act.run(async () => {
      const r = await runCommand(`managers:${teamId}:${personId}`, (commandId) =>
        work.setTeamManagers({ commandId, orgId, teamId, managers: personId ? [personId] : [] }),
      );
      onChanged(r.position);
    });
  const setTeam = (personId: string, teamId: string) =>
    void act.run(async () => {
      const r = await runCommand(`member-team:${personId}:${teamId}`, (commandId) => work.setMemberTeam({ commandId, orgId, personId, teamId }));
      onChanged(r.position);
    });
  const teamOf = (personId: string) => catalog.teams.find((t) => t.members.includes(personId))?.teamId ?? "";

  return (
    <Card title="Teams" testId="teams-card" wide>
      <p className="muted small">A team's manager approves its members' weeks and sees their time.</p>
      {catalog.teams.length > 0 && (
        <div className="table-wrap" tabIndex={0}>
          <table data-testid="teams-table">
            <thead>
              <tr>
                <th>Team</th>
                <th>Manager</th>
                <th>Members</th>
              </tr>
            </thead>
            <tbody>
              {catalog.teams.map((t) => (
                <tr key={t.teamId} data-testid="team-row" data-name={t.name}>
                  <td>{t.name}</td>
                  <td>
                    <select aria-label={`Manager of ${t.name}`} data-testid="team-manager" value={t.managers[0] ?? ""} onChange={(e) => setManager(t.teamId, e.target.value)}>
                      <option value="">Nobody</option>
                      {leaders.map((m) => (
                        <option key={m.personId} value={m.personId}>
                          {nameOf(m.personId)}
                        </option>
                      ))}
                    </select>
                  </td>
                  <td>{t.members.map(nameOf).join(", ") || <span className="muted">none</span>}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <form className="inline-form" onSubmit={create}>
        <label>
          New team
          <input data-testid="team-name" value={name} onChange={(e) => setName(e.target.value)} required maxLength={200} />
        </label>
        <button type="submit" data-testid="team-submit" disabled={act.busy}>
          Create team
        </button>
      </form>
      {catalog.teams.length > 0 && (
        <div className="table-wrap" tabIndex={0}>
          <table data-testid="member-teams">
            <thead>
              <tr>
                <th>Member</th>
                <th>Team</th>
              </tr>
            </thead>
            <tbody>
              {active.map((m) => (
                <tr key={m.personId} data-testid="member-team-row" data-person-id={m.personId}>
                  <td>{nameOf(m.personId)}</td>
                  <td>
                    <select aria-label={`Team of ${nameOf(m.personId)}`} data-testid="member-team" value={teamOf(m.personId)} onChange={(e) => setTeam(m.personId, e.target.value)}>
                      <option value="">No team</option>
                      {catalog.teams.map((t) => (
                        <option key={t.teamId} value={t.teamId}>
                          {t.name}
                        </option>
                      ))}
                    </select>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <ErrorAlert error={act.error} testId="teams-error" />
    </Card>
  );
}

/** Project time in a range: per project (billable or not), per member. */
function ProjectTimeCard({ catalog, orgId, range }: { catalog: Catalog; orgId: string; range: { from: string; to: string } }) {
  const { nameOf } = useOrg();
  const [from, setFrom] = useState(range.from);
  const [to, setTo] = useState(addDays(range.from, 6));
  const time = useAsync(() => work.getProjectTime({ orgId, from, to, minPosition: 0n }), [orgId, from, to]);
  const exporting = useAction();
  const projectName = (id: string) => catalog.projects.find((p) => p.projectId === id)?.name ?? id;
  const rows: ProjectTimeRow[] = time.data?.rows ?? [];
  const byProject = new Map<string, { billable: boolean; ms: number; people: Map<string, number> }>();
  for (const r of rows) {
    const p = byProject.get(r.projectId) ?? { billable: r.billable, ms: 0, people: new Map<string, number>() };
    p.ms += Number(r.ms);
    p.people.set(r.personId, (p.people.get(r.personId) ?? 0) + Number(r.ms));
    byProject.set(r.projectId, p);
  }
  const billable = [...byProject.values()].filter((p) => p.billable).reduce((s, p) => s + p.ms, 0);
  const total = [...byProject.values()].reduce((s, p) => s + p.ms, 0);

  const download = (what: "project-time" | "timesheets") =>
    void exporting.run(async () => {
      const request = { orgId, from, to, minPosition: 0n };
      const chunks = what === "project-time" ? work.exportProjectTime(request) : work.exportTimesheets(request);
      const parts: BlobPart[] = [];
      for await (const chunk of chunks) parts.push(chunk.data as BlobPart);
      const url = URL.createObjectURL(new Blob(parts, { type: "text/csv" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `${what}-${from}-${to}.csv`;
      a.click();
      URL.revokeObjectURL(url);
    });

  return (
    <Card
      title="Project time"
      testId="project-time-card"
      wide
      actions={
        <div className="button-row">
          <button type="button" data-testid="project-time-export" onClick={() => download("project-time")} disabled={exporting.busy}>
            Project time CSV
          </button>
          <button type="button" data-testid="timesheets-export" onClick={() => download("timesheets")} disabled={exporting.busy}>
            Timesheets CSV
          </button>
        </div>
      }
    >
      <div className="inline-form">
        <label>
          From
          <input type="date" data-testid="project-time-from" value={from} onChange={(e) => setFrom(e.target.value)} />
        </label>
        <label>
          To
          <input type="date" data-testid="project-time-to" value={to} onChange={(e) => setTo(e.target.value)} />
        </label>
      </div>
      <ErrorAlert error={time.error ?? exporting.error} testId="project-time-error" />
      <p data-testid="project-time-totals">
        {hours(total)} h in all, {hours(billable)} h billable, {hours(total - billable)} h not billable.
      </p>
      {byProject.size > 0 && (
        <div className="table-wrap" tabIndex={0}>
          <table data-testid="project-time-table">
            <thead>
              <tr>
                <th>Project</th>
                <th>Billable</th>
                <th className="num">Hours</th>
                <th>By member</th>
              </tr>
            </thead>
            <tbody>
              {[...byProject.entries()].map(([id, p]) => (
                <tr key={id} data-testid="project-time-row" data-project-id={id} data-ms={p.ms}>
                  <td>{projectName(id)}</td>
                  <td>{p.billable ? "Yes" : "No"}</td>
                  <td className="num">{hours(p.ms)}</td>
                  <td>
                    {[...p.people.entries()].map(([person, ms]) => `${nameOf(person)} ${hours(ms)} h`).join(", ")}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Card>
  );
}

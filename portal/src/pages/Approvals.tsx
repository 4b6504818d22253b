import { useState } from "react";
import { can, runCommand, work } from "../api";
import { Card, ErrorAlert, Loading, useAction, useAsync } from "../components/ui";
import type { Catalog, Week } from "../gen/trackhrs/work/v1/work_pb";
import { useOrg } from "../org";
import { hours } from "../time";
import { WeekDetails } from "./Week";

/**
 * The approvals queue: submitted weeks of the members the caller decides on
 * (their teams' for managers, everyone's for owners and admins), and
 * approved weeks with time that arrived after the approval. Each opens to
 * the member's week; approve with an optional comment, reject saying why,
 * or (owners and admins) reopen an approved week saying why.
 */
export function ApprovalsPage() {
  const { session } = useOrg();
  const [minPosition, setMinPosition] = useState(0n);
  const queue = useAsync(() => work.listApprovals({ orgId: session.orgId, minPosition }), [session.orgId, minPosition]);
  const catalog = useAsync(() => work.getCatalog({ orgId: session.orgId, minPosition: 0n }), [session.orgId]);
  const weeks = queue.data?.weeks ?? [];
  return (
    <>
      <div className="page-head">
        <h1>Approvals</h1>
        <button type="button" data-testid="approvals-refresh" onClick={queue.reload} disabled={queue.loading}>
          Refresh
        </button>
      </div>
      <Card title="Weeks waiting for a decision" testId="approvals-card" wide>
        <ErrorAlert error={queue.error} testId="approvals-error" />
        {queue.loading && !queue.data ? (
          <Loading what="Loading the queue" />
        ) : weeks.length === 0 ? (
          <p className="muted" data-testid="approvals-empty">
            Nothing waits for you.
          </p>
        ) : (
          weeks.map((w) => <QueuedWeek key={`${w.personId}/${w.weekStart}`} week={w} catalog={catalog.data} onDecided={(p) => setMinPosition(p)} />)
        )}
      </Card>
    </>
  );
}

function QueuedWeek({ week, catalog, onDecided }: { week: Week; catalog: Catalog | undefined; onDecided: (position: bigint) => void }) {
  const { session, nameOf } = useOrg();
  const [open, setOpen] = useState(false);
  const [comment, setComment] = useState("");
  const act = useAction();
  const view = useAsync(
    () => (open ? work.getWeek({ orgId: session.orgId, personId: week.personId, date: week.weekStart, minPosition: 0n }) : Promise.resolve(undefined)),
    [open, week.personId, week.weekStart],
  );
  const decide = (decision: { case: "approve" | "reject" | "reopen"; value: string }) =>
    void act.run(async () => {
      const r = await runCommand(`decide:${week.personId}:${week.weekStart}:${decision.case}`, (commandId) =>
        work.decideWeek({ commandId, orgId: session.orgId, personId: week.personId, date: week.weekStart, decision }),
      );
      onDecided(r.position);
    });
  const submitted = week.status === "submitted";
  return (
    <article className="queued-week" data-testid="approval-row" data-person-id={week.personId} data-week={week.weekStart} data-status={week.status}>
      <header className="inline-form">
        <strong>{nameOf(week.personId)}</strong>
        <span>week of {week.weekStart}</span>
        <span>{hours(week.totalMs)} h</span>
        {week.lateMs > 0n && <span className="tag tag-wait">{hours(week.lateMs)} h arrived after approval</span>}
        <button type="button" data-testid="approval-open" aria-expanded={open} onClick={() => setOpen(!open)}>
          {open ? "Hide" : "Open"}
        </button>
      </header>
      {open && (view.data ? <WeekDetails view={view.data} catalog={catalog} /> : <ErrorAlert error={view.error} />)}
      <div className="inline-form">
        <label>
          {submitted ? "Comment (required to reject)" : "Reason to reopen"}
          <input data-testid="approval-comment" value={comment} onChange={(e) => setComment(e.target.value)} maxLength={2000} />
        </label>
        {submitted ? (
          <>
            <button type="button" className="primary" data-testid="approval-approve" disabled={act.busy} onClick={() => decide({ case: "approve", value: comment })}>
              Approve
            </button>
            <button type="button" data-testid="approval-reject" disabled={act.busy} onClick={() => decide({ case: "reject", value: comment })}>
              Reject
            </button>
          </>
        ) : (
          can(session.role).reopenWeeks && (
            <button type="button" data-testid="approval-reopen" disabled={act.busy} onClick={() => decide({ case: "reopen", value: comment })}>
              Reopen
            </button>
          )
        )}
      </div>
      <ErrorAlert error={act.error} testId="approval-error" />
    </article>
  );
}

import { useState, type FormEvent } from "react";
import { can, pay, runCommand } from "../api";
import { Card, ErrorAlert, Loading, Notice, useAction, useAsync } from "../components/ui";
import { AccrualEvery, type LeaveRequest, type LeaveView, type PayPolicy } from "../gen/trackhrs/pay/v1/pay_pb";
import { useOrg } from "../org";
import { addDays, daysBetween, hours, today, weekdayOf } from "../time";

const H = 3_600_000;

/** The first and last day of the month holding `day`. */
function monthOf(day: string): { from: string; to: string } {
  const from = `${day.slice(0, 7)}-01`;
  const next = new Date(`${from}T00:00:00Z`);
  next.setUTCMonth(next.getUTCMonth() + 1);
  return { from, to: addDays(next.toISOString().slice(0, 10), -1) };
}

/**
 * Leave: request it (the balance before and after), cancel a request that
 * has not started, decide on the team's requests (managers, owners and
 * admins), see who is away in a month, and the balances; owners and admins
 * define leave types and public holidays.
 */
export function LeavePage() {
  const { session, timeZone } = useOrg();
  const may = can(session.role);
  const [minPosition, setMinPosition] = useState(0n);
  const [month, setMonth] = useState(() => today(timeZone).slice(0, 7));
  const range = monthOf(`${month}-01`);
  const policy = useAsync(() => pay.getPolicy({ orgId: session.orgId, minPosition }), [session.orgId, minPosition]);
  // Requests of the month shown, and a year ahead for the caller's own.
  const shown = useAsync(() => pay.listLeave({ orgId: session.orgId, from: range.from, to: range.to, minPosition }), [session.orgId, range.from, minPosition]);
  const ahead = useAsync(
    () => pay.listLeave({ orgId: session.orgId, from: addDays(today(timeZone), -31), to: addDays(today(timeZone), 330), minPosition }),
    [session.orgId, minPosition],
  );
  const done = (position: bigint) => setMinPosition(position);
  return (
    <>
      <div className="page-head">
        <h1>Leave</h1>
      </div>
      <ErrorAlert error={policy.error ?? shown.error ?? ahead.error} testId="leave-error" />
      {policy.loading && !policy.data ? (
        <Loading what="Loading leave" />
      ) : (
        policy.data && (
          <div className="grid">
            {may.requestLeave && <RequestCard policy={policy.data} view={ahead.data} onDone={done} />}
            {may.requestLeave && <MyRequests policy={policy.data} view={ahead.data} onDone={done} />}
            {may.decideLeave && <ToDecide policy={policy.data} view={ahead.data} onDone={done} />}
            <AwayCard policy={policy.data} view={shown.data} month={month} setMonth={setMonth} range={range} />
            <BalancesCard policy={policy.data} view={ahead.data} />
            {may.managePay && <LeaveTypesCard policy={policy.data} onDone={done} />}
          </div>
        )
      )}
    </>
  );
}

/** The leave types by name. */
function typesOf(policy: PayPolicy) {
  return [...policy.leaveTypes].sort((a, b) => a.name.localeCompare(b.name));
}

function typeName(policy: PayPolicy, id: string): string {
  return policy.leaveTypes.find((t) => t.id === id)?.name ?? id;
}

function RequestCard({ policy, view, onDone }: { policy: PayPolicy; view: LeaveView | undefined; onDone: (p: bigint) => void }) {
  const { session, timeZone, org } = useOrg();
  const [type, setType] = useState(typesOf(policy)[0]?.id ?? "");
  const [from, setFrom] = useState(() => addDays(today(timeZone), 7));
  const [to, setTo] = useState(() => addDays(today(timeZone), 7));
  const [dayHours, setDayHours] = useState("");
  const [note, setNote] = useState("");
  const act = useAction();
  const chosen = policy.leaveTypes.find((t) => t.id === type);
  const workWeek = org?.settings?.workWeek ?? [];
  const holidays = new Set(policy.holidays.map((h) => h.date));
  const perDay = dayHours ? Math.round(Number(dayHours) * H) : Number(policy.dayMs);
  const days = from && to && to >= from ? daysBetween(from, to).filter((d) => workWeek.includes(weekdayOf(d)) && !holidays.has(d)) : [];
  const taking = days.length * perDay;
  const mine = view?.balances.find((b) => b.personId === session.personId && b.leaveTypeId === type);
  const balance = Number(mine?.balanceMs ?? 0n);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void act.run(async () => {
      const r = await runCommand(`leave:${type}:${from}:${to}`, (commandId) =>
        pay.requestLeave({ commandId, orgId: session.orgId, leaveTypeId: type, from, to, dayMs: dayHours ? BigInt(perDay) : 0n, note }),
      );
      setNote("");
      onDone(r.result?.position ?? 0n);
    });
  };
  if (policy.leaveTypes.length === 0) {
    return (
      <Card title="Request leave" testId="leave-request-card">
        <p className="muted">No leave types are defined yet.</p>
      </Card>
    );
  }
  return (
    <Card title="Request leave" testId="leave-request-card">
      <form className="stack" onSubmit={submit}>
        <label>
          Type
          <select data-testid="leave-type" value={type} onChange={(e) => setType(e.target.value)}>
            {typesOf(policy).map((t) => (
              <option key={t.id} value={t.id}>
                {t.name}
                {t.paid ? "" : " (unpaid)"}
              </option>
            ))}
          </select>
        </label>
        <div className="inline-form">
          <label>
            First day
            <input type="date" data-testid="leave-from" value={from} onChange={(e) => setFrom(e.target.value)} required />
          </label>
          <label>
            Last day
            <input type="date" data-testid="leave-to" value={to} onChange={(e) => setTo(e.target.value)} required />
          </label>
          <label>
            Hours a day (part days)
            <input type="number" min="0.25" max="24" step="0.25" data-testid="leave-hours" placeholder={String(hours(policy.dayMs))} value={dayHours} onChange={(e) => setDayHours(e.target.value)} />
          </label>
        </div>
        <label>
          Note
          <input data-testid="leave-note" value={note} maxLength={2000} onChange={(e) => setNote(e.target.value)} />
        </label>
        <p data-testid="leave-preview" data-days={days.length} data-taking-ms={taking}>
          {days.length} work day{days.length === 1 ? "" : "s"}, {hours(taking)} h.{" "}
          {chosen?.accrual ? (
            <>
              Balance now <strong data-testid="leave-balance-before">{hours(balance)} h</strong>, after this request{" "}
              <strong data-testid="leave-balance-after">{hours(balance - taking)} h</strong>
              {Number(chosen.negativeAllowanceMs) > 0 && ` (down to −${hours(chosen.negativeAllowanceMs)} h allowed)`}.
            </>
          ) : (
            "This type keeps no balance."
          )}
        </p>
        <button type="submit" className="primary" data-testid="leave-submit" disabled={act.busy || !type}>
          Request
        </button>
        <ErrorAlert error={act.error} testId="leave-request-error" />
      </form>
    </Card>
  );
}

function StatusTag({ status }: { status: string }) {
  const cls = status === "approved" ? "tag-on" : status === "pending" ? "tag-wait" : "tag-off";
  return (
    <span className={`tag ${cls}`} data-testid="leave-status">
      {status}
    </span>
  );
}

function MyRequests({ policy, view, onDone }: { policy: PayPolicy; view: LeaveView | undefined; onDone: (p: bigint) => void }) {
  const { session, timeZone } = useOrg();
  const act = useAction();
  const mine = (view?.requests ?? []).filter((r) => r.personId === session.personId);
  const cancel = (r: LeaveRequest) =>
    void act.run(async () => {
      const done = await runCommand(`cancel:${r.requestId}`, (commandId) => pay.cancelLeave({ commandId, orgId: session.orgId, requestId: r.requestId }));
      onDone(done.position);
    });
  return (
    <Card title="My requests" testId="leave-mine-card">
      {mine.length === 0 ? (
        <p className="muted" data-testid="leave-mine-empty">
          No requests in the last month or the year ahead.
        </p>
      ) : (
        <ul className="plain-list">
          {mine.map((r) => (
            <li key={r.requestId} data-testid="leave-mine-row" data-request-id={r.requestId} data-status={r.status}>
              {typeName(policy, r.leaveTypeId)} {r.firstDay}
              {r.lastDay !== r.firstDay && ` – ${r.lastDay}`} ({hours(r.ms)} h) <StatusTag status={r.status} />
              {r.comment && <q> {r.comment}</q>}
              {(r.status === "pending" || r.status === "approved") && r.firstDay > today(timeZone) && (
                <button type="button" className="link" data-testid="leave-cancel" disabled={act.busy} onClick={() => cancel(r)}>
                  Cancel
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      <ErrorAlert error={act.error} testId="leave-cancel-error" />
    </Card>
  );
}

function ToDecide({ policy, view, onDone }: { policy: PayPolicy; view: LeaveView | undefined; onDone: (p: bigint) => void }) {
  const { session, nameOf } = useOrg();
  const act = useAction();
  const [comment, setComment] = useState("");
  const pending = (view?.requests ?? []).filter((r) => r.status === "pending" && r.personId !== session.personId);
  const decide = (r: LeaveRequest, approve: boolean) =>
    void act.run(async () => {
      const done = await runCommand(`decide-leave:${r.requestId}:${approve}`, (commandId) =>
        pay.decideLeave({ commandId, orgId: session.orgId, personId: r.personId, requestId: r.requestId, approve, comment }),
      );
      setComment("");
      onDone(done.position);
    });
  return (
    <Card title="Requests to decide" testId="leave-decide-card">
      {pending.length === 0 ? (
        <p className="muted" data-testid="leave-decide-empty">
          Nothing waits for you.
        </p>
      ) : (
        <>
          <label>
            Comment
            <input data-testid="leave-comment" value={comment} maxLength={2000} onChange={(e) => setComment(e.target.value)} />
          </label>
          <ul className="plain-list">
            {pending.map((r) => (
              <li key={r.requestId} data-testid="leave-decide-row" data-person-id={r.personId} data-request-id={r.requestId}>
                <strong>{nameOf(r.personId)}</strong>: {typeName(policy, r.leaveTypeId)} {r.firstDay}
                {r.lastDay !== r.firstDay && ` – ${r.lastDay}`} ({hours(r.ms)} h){r.note && <q> {r.note}</q>}{" "}
                <span className="button-row">
                  <button type="button" className="primary" data-testid="leave-approve" disabled={act.busy} onClick={() => decide(r, true)}>
                    Approve
                  </button>
                  <button type="button" data-testid="leave-deny" disabled={act.busy} onClick={() => decide(r, false)}>
                    Deny
                  </button>
                </span>
              </li>
            ))}
          </ul>
        </>
      )}
      <ErrorAlert error={act.error} testId="leave-decide-error" />
    </Card>
  );
}

function AwayCard({
  policy,
  view,
  month,
  setMonth,
  range,
}: {
  policy: PayPolicy;
  view: LeaveView | undefined;
  month: string;
  setMonth: (m: string) => void;
  range: { from: string; to: string };
}) {
  const { nameOf } = useOrg();
  const days = daysBetween(range.from, range.to);
  const holidays = new Map(policy.holidays.map((h) => [h.date, h.name]));
  const live = (view?.requests ?? []).filter((r) => r.status === "approved" || r.status === "pending");
  const people = [...new Set(live.map((r) => r.personId))];
  return (
    <Card title="Who is away" testId="leave-away-card" wide>
      <label>
        Month
        <input type="month" data-testid="leave-month" value={month} onChange={(e) => e.target.value && setMonth(e.target.value)} />
      </label>
      {people.length === 0 ? (
        <p className="muted" data-testid="leave-away-empty">
          Nobody is away in {month}.
        </p>
      ) : (
        <div className="table-wrap" tabIndex={0}>
          <table className="calendar" data-testid="leave-calendar">
            <thead>
              <tr>
                <th>Member</th>
                {days.map((d) => (
                  <th key={d} className={holidays.has(d) ? "num holiday" : "num"} title={holidays.get(d)}>
                    {d.slice(8)}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {people.map((p) => (
                <tr key={p} data-testid="leave-away-row" data-person-id={p}>
                  <th scope="row">{nameOf(p)}</th>
                  {days.map((d) => {
                    const r = live.find((x) => x.personId === p && x.firstDay <= d && d <= x.lastDay);
                    return (
                      <td key={d} className={r ? (r.status === "approved" ? "away" : "away-pending") : undefined} data-day={d} data-away={r ? r.status : undefined} title={r ? `${typeName(policy, r.leaveTypeId)} (${r.status})` : undefined}>
                        {r ? (r.status === "approved" ? "●" : "○") : ""}
                      </td>
                    );
                  })}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <p className="muted">● approved, ○ pending; holidays are marked in the header.</p>
    </Card>
  );
}

function BalancesCard({ policy, view }: { policy: PayPolicy; view: LeaveView | undefined }) {
  const { nameOf } = useOrg();
  const rows = (view?.balances ?? []).filter((b) => policy.leaveTypes.find((t) => t.id === b.leaveTypeId)?.accrual);
  return (
    <Card title="Balances" testId="leave-balances-card">
      {rows.length === 0 ? (
        <p className="muted">No balances yet: they grow at each accrual.</p>
      ) : (
        <div className="table-wrap" tabIndex={0}>
          <table data-testid="leave-balances">
            <thead>
              <tr>
                <th>Member</th>
                <th>Type</th>
                <th className="num">Accrued</th>
                <th className="num">Taken</th>
                <th className="num">Pending</th>
                <th className="num">Balance (h)</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((b) => (
                <tr key={`${b.personId}/${b.leaveTypeId}`} data-testid="leave-balance-row" data-person-id={b.personId} data-balance-ms={String(b.balanceMs)}>
                  <td>{nameOf(b.personId)}</td>
                  <td>{typeName(policy, b.leaveTypeId)}</td>
                  <td className="num">{hours(b.accruedMs)}</td>
                  <td className="num">{hours(b.takenMs)}</td>
                  <td className="num">{hours(b.pendingMs)}</td>
                  <td className="num">{hours(b.balanceMs)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Card>
  );
}

function LeaveTypesCard({ policy, onDone }: { policy: PayPolicy; onDone: (p: bigint) => void }) {
  const { session } = useOrg();
  const act = useAction();
  const [name, setName] = useState("");
  const [paid, setPaid] = useState(true);
  const [monthly, setMonthly] = useState("");
  const [cap, setCap] = useState("");
  const [allowance, setAllowance] = useState("0");
  const [holidayDate, setHolidayDate] = useState("");
  const [holidayName, setHolidayName] = useState("");
  const defineType = (e: FormEvent) => {
    e.preventDefault();
    void act.run(async () => {
      const r = await runCommand(`leave-type:${name}`, (commandId) =>
        pay.changePolicy({
          commandId,
          orgId: session.orgId,
          change: {
            case: "leaveType",
            value: {
              name,
              paid,
              accrual: monthly ? { every: AccrualEvery.MONTH, ms: BigInt(Math.round(Number(monthly) * H)) } : undefined,
              carryOverCapMs: cap ? BigInt(Math.round(Number(cap) * H)) : undefined,
              negativeAllowanceMs: BigInt(Math.round(Number(allowance || "0") * H)),
            },
          },
        }),
      );
      setName("");
      onDone(r.result?.position ?? 0n);
    });
  };
  const setHoliday = (date: string, holiday: string) =>
    void act.run(async () => {
      const r = await runCommand(`holiday:${date}:${holiday}`, (commandId) =>
        pay.changePolicy({ commandId, orgId: session.orgId, change: { case: "holiday", value: { date, name: holiday } } }),
      );
      setHolidayDate("");
      setHolidayName("");
      onDone(r.result?.position ?? 0n);
    });
  return (
    <Card title="Leave types and holidays" testId="leave-types-card" wide>
      <div className="table-wrap" tabIndex={0}>
        <table data-testid="leave-types">
          <thead>
            <tr>
              <th>Type</th>
              <th>Paid</th>
              <th className="num">Accrues (h)</th>
              <th className="num">Carry-over cap (h)</th>
              <th className="num">Below zero (h)</th>
            </tr>
          </thead>
          <tbody>
            {typesOf(policy).map((t) => (
              <tr key={t.id} data-testid="leave-type-row" data-name={t.name}>
                <td>{t.name}</td>
                <td>{t.paid ? "Yes" : "No"}</td>
                <td className="num">{t.accrual ? `${hours(t.accrual.ms)} a ${t.accrual.every === AccrualEvery.MONTH ? "month" : "pay period"}` : "—"}</td>
                <td className="num">{t.carryOverCapMs === undefined ? "—" : hours(t.carryOverCapMs)}</td>
                <td className="num">{hours(t.negativeAllowanceMs)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <form className="inline-form" onSubmit={defineType}>
        <label>
          New type
          <input data-testid="leave-type-name" value={name} maxLength={100} onChange={(e) => setName(e.target.value)} required />
        </label>
        <label className="check">
          <input type="checkbox" data-testid="leave-type-paid" checked={paid} onChange={(e) => setPaid(e.target.checked)} /> Paid
        </label>
        <label>
          Hours a month
          <input type="number" min="0" step="0.25" data-testid="leave-type-monthly" value={monthly} onChange={(e) => setMonthly(e.target.value)} />
        </label>
        <label>
          Carry-over cap (h)
          <input type="number" min="0" step="1" data-testid="leave-type-cap" value={cap} onChange={(e) => setCap(e.target.value)} />
        </label>
        <label>
          Below zero (h)
          <input type="number" min="0" step="1" data-testid="leave-type-allowance" value={allowance} onChange={(e) => setAllowance(e.target.value)} />
        </label>
        <button type="submit" data-testid="leave-type-submit" disabled={act.busy}>
          Add type
        </button>
      </form>
      <h3>Public holidays</h3>
      <ul className="plain-list" data-testid="holidays">
        {policy.holidays.map((h) => (
          <li key={h.date} data-testid="holiday-row" data-date={h.date}>
            {h.date} {h.name}{" "}
            <button type="button" className="link" data-testid="holiday-remove" disabled={act.busy} onClick={() => setHoliday(h.date, "")}>
              Remove
            </button>
          </li>
        ))}
      </ul>
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          setHoliday(holidayDate, holidayName);
        }}
      >
        <label>
          Date
          <input type="date" data-testid="holiday-date" value={holidayDate} onChange={(e) => setHolidayDate(e.target.value)} required />
        </label>
        <label>
          Name
          <input data-testid="holiday-name" value={holidayName} maxLength={100} onChange={(e) => setHolidayName(e.target.value)} required />
        </label>
        <button type="submit" data-testid="holiday-submit" disabled={act.busy}>
          Add holiday
        </button>
      </form>
      <ErrorAlert error={act.error} testId="leave-types-error" />
      <Notice>Accrual runs at each boundary in the organization's time zone, for members with a pay rate.</Notice>
    </Card>
  );
}

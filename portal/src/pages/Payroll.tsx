import { useState, type FormEvent } from "react";
import { can, pay, runCommand } from "../api";
import { Card, ErrorAlert, Loading, useAction, useAsync } from "../components/ui";
import { PeriodKind, type Line, type PayPolicy, type Run } from "../gen/trackhrs/pay/v1/pay_pb";
import { useOrg } from "../org";
import { hours, money, today } from "../time";

const H = 3_600_000;

const KINDS: { kind: PeriodKind; label: string }[] = [
  { kind: PeriodKind.WEEKLY, label: "Weekly" },
  { kind: PeriodKind.BI_WEEKLY, label: "Every two weeks" },
  { kind: PeriodKind.SEMI_MONTHLY, label: "Twice a month" },
  { kind: PeriodKind.MONTHLY, label: "Monthly" },
];

const LINE_NAMES: Record<string, string> = {
  regular: "Regular",
  overtime: "Overtime",
  leave: "Leave",
  holiday: "Holiday",
  salary: "Salary",
  adjustment: "Adjustment",
};

/**
 * Payroll: runs of pay periods that have ended (drafted from approved
 * timesheets and approved leave, reviewed line by line, finalized, exported
 * as CSV), and for owners and admins the pay policy and members' rates.
 * Members see their own lines of finalized runs.
 */
export function PayrollPage() {
  const { session } = useOrg();
  const may = can(session.role);
  const [minPosition, setMinPosition] = useState(0n);
  const policy = useAsync(() => pay.getPolicy({ orgId: session.orgId, minPosition }), [session.orgId, minPosition]);
  const runs = useAsync(() => pay.listRuns({ orgId: session.orgId, minPosition }), [session.orgId, minPosition]);
  const [open, setOpen] = useState<string | null>(null);
  const done = (p: bigint) => setMinPosition(p);
  return (
    <>
      <div className="page-head">
        <h1>Payroll</h1>
      </div>
      <ErrorAlert error={policy.error ?? runs.error} testId="payroll-error" />
      {(policy.loading && !policy.data) || (runs.loading && !runs.data) ? (
        <Loading what="Loading payroll" />
      ) : (
        policy.data && (
          <>
            <RunsCard policy={policy.data} runs={runs.data?.runs ?? []} open={open} setOpen={setOpen} onDone={done} minPosition={minPosition} />
            {may.managePay && (
              <div className="grid">
                <PolicyCard policy={policy.data} onDone={done} />
                <RatesCard policy={policy.data} onDone={done} />
              </div>
            )}
            {!may.managePay && <RatesCard policy={policy.data} onDone={done} />}
          </>
        )
      )}
    </>
  );
}

function RunsCard({
  policy,
  runs,
  open,
  setOpen,
  onDone,
  minPosition,
}: {
  policy: PayPolicy;
  runs: Run[];
  open: string | null;
  setOpen: (first: string | null) => void;
  onDone: (p: bigint) => void;
  minPosition: bigint;
}) {
  const { session, timeZone } = useOrg();
  const may = can(session.role);
  const act = useAction();
  const ended = policy.periods.filter((p) => p.lastDay < today(timeZone)).reverse();
  const [period, setPeriod] = useState(ended[0]?.firstDay ?? "");
  const digits = policy.minorDigits;
  const draft = (e: FormEvent) => {
    e.preventDefault();
    void act.run(async () => {
      const r = await runCommand(`draft:${period}`, (commandId) => pay.draftRun({ commandId, orgId: session.orgId, firstDay: period, minPosition }));
      setOpen(period);
      onDone(r.position);
    });
  };
  return (
    <Card title="Payroll runs" testId="runs-card" wide>
      {may.managePay && (
        <form className="inline-form" onSubmit={draft}>
          <label>
            Pay period
            <select data-testid="run-period" value={period} onChange={(e) => setPeriod(e.target.value)}>
              {ended.map((p) => (
                <option key={p.firstDay} value={p.firstDay}>
                  {p.firstDay} – {p.lastDay}
                </option>
              ))}
            </select>
          </label>
          <button type="submit" className="primary" data-testid="run-draft" disabled={act.busy || !period}>
            Draft run
          </button>
        </form>
      )}
      <ErrorAlert error={act.error} testId="run-draft-error" />
      {runs.length === 0 ? (
        <p className="muted" data-testid="runs-empty">
          No runs yet.
        </p>
      ) : (
        <div className="table-wrap" tabIndex={0}>
          <table data-testid="runs">
            <thead>
              <tr>
                <th>Period</th>
                <th>Status</th>
                <th className="num">Members</th>
                <th className="num">Total ({policy.currency})</th>
                <th>Missing</th>
                <th>Details</th>
              </tr>
            </thead>
            <tbody>
              {runs.map((r) => (
                <tr key={r.firstDay} data-testid="run-row" data-first-day={r.firstDay} data-status={r.status} data-total-minor={String(r.totalMinor)}>
                  <td>
                    {r.firstDay} – {r.lastDay}
                  </td>
                  <td>
                    <span className={`tag ${r.status === "finalized" ? "tag-on" : "tag-wait"}`}>{r.status === "draft" ? `draft ${r.draft}` : r.status}</span>
                  </td>
                  <td className="num">{r.members}</td>
                  <td className="num">{money(r.totalMinor, digits)}</td>
                  <td>{r.missing.length === 0 ? "—" : `${r.missing.length}`}</td>
                  <td>
                    <button type="button" className="link" data-testid="run-open" aria-expanded={open === r.firstDay} onClick={() => setOpen(open === r.firstDay ? null : r.firstDay)}>
                      {open === r.firstDay ? "Hide" : "Open"}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {open && <RunDetails first={open} minPosition={minPosition} onDone={onDone} />}
    </Card>
  );
}

function RunDetails({ first, minPosition, onDone }: { first: string; minPosition: bigint; onDone: (p: bigint) => void }) {
  const { session, nameOf } = useOrg();
  const may = can(session.role);
  const view = useAsync(() => pay.getRun({ orgId: session.orgId, firstDay: first, minPosition }), [session.orgId, first, minPosition]);
  const act = useAction();
  const exporting = useAction();
  if (view.error) return <ErrorAlert error={view.error} testId="run-error" />;
  if (!view.data?.run) return <Loading what="Loading the run" />;
  const { run, lines, minorDigits: digits, currency } = view.data;
  const byMember = new Map<string, Line[]>();
  for (const l of lines) byMember.set(l.personId, [...(byMember.get(l.personId) ?? []), l]);
  const finalize = () =>
    void act.run(async () => {
      const r = await runCommand(`finalize:${first}:${run.draft}`, (commandId) => pay.finalizeRun({ commandId, orgId: session.orgId, firstDay: first, draft: run.draft }));
      onDone(r.position);
    });
  const download = () =>
    void exporting.run(async () => {
      const parts: BlobPart[] = [];
      for await (const chunk of pay.exportRun({ orgId: session.orgId, firstDay: first, minPosition: 0n })) parts.push(chunk.data as BlobPart);
      const url = URL.createObjectURL(new Blob(parts, { type: "text/csv" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `payroll-${first}.csv`;
      a.click();
      URL.revokeObjectURL(url);
    });
  return (
    <section className="run-details" data-testid="run-details" data-first-day={first} data-status={run.status} data-draft={run.draft}>
      <h3>
        Run of {run.firstDay} – {run.lastDay}: {money(run.totalMinor, digits)} {currency}
      </h3>
      {run.missing.length > 0 && (
        <div className="alert alert-warn" role="status" data-testid="run-missing">
          Not finalizable yet, {run.missing.length} missing:
          <ul>
            {run.missing.slice(0, 20).map((m) => (
              <li key={`${m.personId}/${m.what}/${m.day}`}>
                {nameOf(m.personId)}: {m.what === "week" ? `the week of ${m.day} is not approved` : `no pay rate on ${m.day}`}
              </li>
            ))}
            {run.missing.length > 20 && <li>and {run.missing.length - 20} more</li>}
          </ul>
        </div>
      )}
      <div className="table-wrap" tabIndex={0}>
        <table data-testid="run-lines">
          <thead>
            <tr>
              <th>Member</th>
              <th>Line</th>
              <th className="num">Hours / days</th>
              <th className="num">Rate</th>
              <th className="num">%</th>
              <th className="num">Amount</th>
            </tr>
          </thead>
          <tbody>
            {[...byMember.entries()].flatMap(([person, ls]) => [
              ...ls.map((l, i) => (
                <tr key={`${person}/${i}`} data-testid="run-line" data-person-id={person} data-kind={l.kind} data-amount-minor={String(l.amountMinor)}>
                  <td>{i === 0 ? nameOf(person) : ""}</td>
                  <td>
                    {LINE_NAMES[l.kind] ?? l.kind}
                    {l.kind === "adjustment" && ` of ${l.corrects}`}
                  </td>
                  <td className="num">{l.kind === "salary" ? `${l.days} d` : l.kind === "adjustment" ? "" : `${hours(l.ms)} h`}</td>
                  <td className="num">{l.kind === "adjustment" ? "" : money(l.rateMinor, digits)}</td>
                  <td className="num">{l.kind === "adjustment" ? "" : l.percent}</td>
                  <td className="num">{money(l.amountMinor, digits)}</td>
                </tr>
              )),
              <tr key={`${person}/total`} className="total" data-testid="run-member-total" data-person-id={person}>
                <td colSpan={5}>Total {nameOf(person)}</td>
                <td className="num">{money(ls.reduce((s, l) => s + l.amountMinor, 0n), digits)}</td>
              </tr>,
            ])}
          </tbody>
        </table>
      </div>
      <div className="button-row">
        {may.managePay && run.status === "draft" && (
          <button type="button" className="primary" data-testid="run-finalize" disabled={act.busy} onClick={finalize}>
            Finalize draft {run.draft}
          </button>
        )}
        {run.status === "finalized" && (
          <button type="button" data-testid="run-export" disabled={exporting.busy} onClick={download}>
            CSV
          </button>
        )}
      </div>
      <ErrorAlert error={act.error ?? exporting.error} testId="run-action-error" />
    </section>
  );
}

function PolicyCard({ policy, onDone }: { policy: PayPolicy; onDone: (p: bigint) => void }) {
  const { session, timeZone } = useOrg();
  const act = useAction();
  const [currency, setCurrency] = useState(policy.currency || "EUR");
  const [kind, setKind] = useState(PeriodKind.MONTHLY);
  const [from, setFrom] = useState(() => `${today(timeZone).slice(0, 7)}-01`);
  const o = policy.overtime;
  const [daily, setDaily] = useState(o?.daily ? String(hours(o.daily.afterMs)) : "");
  const [weekly, setWeekly] = useState(o?.weekly ? String(hours(o.weekly.afterMs)) : "");
  const [percent, setPercent] = useState(String(o?.daily?.percent ?? o?.weekly?.percent ?? 150));
  const change = (key: string, value: Parameters<typeof pay.changePolicy>[0]["change"]) =>
    void act.run(async () => {
      const r = await runCommand(`policy:${key}`, (commandId) => pay.changePolicy({ commandId, orgId: session.orgId, change: value }));
      onDone(r.result?.position ?? 0n);
    });
  const threshold = (h: string) => (h ? { afterMs: BigInt(Math.round(Number(h) * H)), percent: Number(percent) } : undefined);
  return (
    <Card title="Pay policy" testId="pay-policy-card">
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          change(`currency:${currency}`, { case: "currency", value: currency.toUpperCase() });
        }}
      >
        <label>
          Currency
          <input data-testid="pay-currency" value={currency} maxLength={3} onChange={(e) => setCurrency(e.target.value)} />
        </label>
        <button type="submit" data-testid="pay-currency-submit" disabled={act.busy}>
          Set
        </button>
      </form>
      <p className="muted" data-testid="pay-schedule">
        Pay periods: {policy.schedule.length === 0 ? "none yet" : policy.schedule.map((s) => `${KINDS.find((k) => k.kind === s.kind)?.label ?? "?"} from ${s.from}`).join("; ")}
      </p>
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          change(`schedule:${from}:${kind}`, { case: "schedule", value: { from, kind } });
        }}
      >
        <label>
          Periods
          <select data-testid="pay-kind" value={kind} onChange={(e) => setKind(Number(e.target.value) as PeriodKind)}>
            {KINDS.map((k) => (
              <option key={k.kind} value={k.kind}>
                {k.label}
              </option>
            ))}
          </select>
        </label>
        <label>
          From
          <input type="date" data-testid="pay-from" value={from} onChange={(e) => setFrom(e.target.value)} />
        </label>
        <button type="submit" data-testid="pay-schedule-submit" disabled={act.busy}>
          Set periods
        </button>
      </form>
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          change(`overtime:${daily}:${weekly}:${percent}`, { case: "overtime", value: { daily: threshold(daily), weekly: threshold(weekly), dailyDouble: o?.dailyDouble } });
        }}
      >
        <label>
          Overtime after (h a day)
          <input type="number" min="0" step="0.5" data-testid="pay-daily" value={daily} onChange={(e) => setDaily(e.target.value)} />
        </label>
        <label>
          (h a week)
          <input type="number" min="0" step="0.5" data-testid="pay-weekly" value={weekly} onChange={(e) => setWeekly(e.target.value)} />
        </label>
        <label>
          at %
          <input type="number" min="100" max="1000" step="5" data-testid="pay-percent" value={percent} onChange={(e) => setPercent(e.target.value)} />
        </label>
        <button type="submit" data-testid="pay-overtime-submit" disabled={act.busy}>
          Set overtime
        </button>
      </form>
      <label className="check">
        <input
          type="checkbox"
          data-testid="pay-managers-see"
          checked={policy.managersSeeTeamPay}
          disabled={act.busy}
          onChange={(e) => change(`visibility:${e.target.checked}`, { case: "managersSeeTeamPay", value: e.target.checked })}
        />{" "}
        Managers see their teams' pay
      </label>
      <ErrorAlert error={act.error} testId="pay-policy-error" />
    </Card>
  );
}

function RatesCard({ policy, onDone }: { policy: PayPolicy; onDone: (p: bigint) => void }) {
  const { session, members, nameOf, timeZone } = useOrg();
  const may = can(session.role);
  const act = useAction();
  const [person, setPerson] = useState("");
  const [from, setFrom] = useState(() => today(timeZone));
  const [salaried, setSalaried] = useState(false);
  const [ended, setEnded] = useState(false);
  const [amount, setAmount] = useState("");
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void act.run(async () => {
      const r = await runCommand(`rate:${person}:${from}:${salaried}:${ended}:${amount}`, (commandId) =>
        pay.changePolicy({ commandId, orgId: session.orgId, change: { case: "rate", value: { personId: person, from, salaried, amount, ended } } }),
      );
      setAmount("");
      onDone(r.result?.position ?? 0n);
    });
  };
  return (
    <Card title={may.managePay ? "Pay rates" : "My pay rate"} testId="pay-rates-card">
      {policy.rates.length === 0 ? (
        <p className="muted" data-testid="pay-rates-empty">
          No rates.
        </p>
      ) : (
        <div className="table-wrap" tabIndex={0}>
          <table data-testid="pay-rates">
            <thead>
              <tr>
                <th>Member</th>
                <th>From</th>
                <th>Kind</th>
                <th className="num">Amount ({policy.currency})</th>
              </tr>
            </thead>
            <tbody>
              {policy.rates.map((r) => (
                <tr key={`${r.personId}/${r.from}`} data-testid="pay-rate-row" data-person-id={r.personId}>
                  <td>{nameOf(r.personId)}</td>
                  <td>{r.from}</td>
                  <td>{r.ended ? "No pay (left)" : r.salaried ? "Salary a period" : "An hour"}</td>
                  <td className="num">{r.ended ? "—" : money(r.amountMinor, policy.minorDigits)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {may.managePay && (
        <form className="inline-form" onSubmit={submit}>
          <label>
            Member
            <select data-testid="rate-person" value={person} onChange={(e) => setPerson(e.target.value)} required>
              <option value="">Choose…</option>
              {members.map((m) => (
                <option key={m.personId} value={m.personId}>
                  {nameOf(m.personId)}
                </option>
              ))}
            </select>
          </label>
          <label>
            From
            <input type="date" data-testid="rate-from" value={from} onChange={(e) => setFrom(e.target.value)} required />
          </label>
          <label className="check">
            <input type="checkbox" data-testid="rate-salaried" checked={salaried} onChange={(e) => setSalaried(e.target.checked)} /> Salary
          </label>
          <label className="check">
            <input type="checkbox" data-testid="rate-ended" checked={ended} onChange={(e) => setEnded(e.target.checked)} /> Left (no pay from then)
          </label>
          <label>
            Amount
            <input data-testid="rate-amount" inputMode="decimal" value={amount} onChange={(e) => setAmount(e.target.value)} required={!ended} disabled={ended} placeholder="25.00" />
          </label>
          <button type="submit" data-testid="rate-submit" disabled={act.busy}>
            Set rate
          </button>
        </form>
      )}
      <ErrorAlert error={act.error} testId="pay-rate-error" />
    </Card>
  );
}

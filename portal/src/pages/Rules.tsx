import { useEffect, useMemo, useRef, useState } from "react";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { ChartConfiguration } from "chart.js";
import { activity, can, runCommand } from "../api";
import { ChartView } from "../components/ChartView";
import { Card, ErrorAlert, Loading, Notice, useAsync } from "../components/ui";
import { noteApplied } from "../freshness";
import { CategoryRuleSchema, type CategoryRule, type CategoryRules, type RulesPreview } from "../gen/trackhrs/activity/v1/activity_pb";
import { useOrg } from "../org";
import { duration, hours } from "../time";

interface Row {
  key: number;
  path: string;
  regex: string;
  ignoreCase: boolean;
  score: string;
}

let nextKey = 1;

function toRow(rule: CategoryRule): Row {
  return {
    key: nextKey++,
    path: rule.name.join(" > "),
    regex: rule.regex ?? "",
    ignoreCase: rule.ignoreCase,
    score: rule.score === undefined ? "" : String(rule.score),
  };
}

/** Rows back to the proto's rules; the server validates and names what is wrong. */
function toRules(rows: Row[]): CategoryRule[] {
  return rows.map((r, i) => {
    const score = r.score.trim();
    let parsed: number | undefined;
    if (score !== "") {
      parsed = Number(score);
      if (!Number.isInteger(parsed)) throw new Error(`Row ${i + 1} (${r.path || "no name"}): the score “${score}” is not a whole number.`);
    }
    return create(CategoryRuleSchema, {
      name: r.path.split(">").map((s) => s.trim()),
      ...(r.regex !== "" ? { regex: r.regex } : {}),
      ignoreCase: r.regex !== "" && r.ignoreCase,
      ...(parsed !== undefined ? { score: parsed } : {}),
    });
  });
}

/** What identifies the editor's rules (for command ids and for a preview's staleness). */
function rowsKey(rows: Row[]): string {
  return JSON.stringify(rows.map(({ key: _k, ...r }) => r));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How long a save is followed before the page stops saying "Applying". */
const FOLLOW_FOR_MS = 5 * 60_000;

/**
 * Waits until the activity read model (which classifies the dashboards) has
 * applied the commit at `position`, the rules change just saved, and returns
 * the rules then in force. GetCategoryRules waits server-side (bounded) for
 * the position; it is asked again while it answers DEADLINE_EXCEEDED or
 * UNAVAILABLE. Null when `live()` turns false or after FOLLOW_FOR_MS.
 */
async function rulesInForce(orgId: string, position: bigint, live: () => boolean): Promise<CategoryRules | null> {
  const end = Date.now() + FOLLOW_FOR_MS;
  for (let attempt = 0; live() && Date.now() < end; attempt++) {
    try {
      return await activity.getCategoryRules({ orgId, minPosition: position });
    } catch (err) {
      const code = ConnectError.from(err).code;
      if (code !== Code.DeadlineExceeded && code !== Code.Unavailable) throw err;
    }
    await sleep(Math.min(2000, 250 * (attempt + 1)));
  }
  return null;
}

/**
 * A rules change on its way into force. SetCategoryRules answers with the
 * organization's version (every change to the org counts), not the rules
 * version; the rules version it becomes is the one in force before, plus
 * one (unless someone else saved rules meanwhile), and is confirmed by the
 * rules in force once the read model has applied the change.
 */
interface Applying {
  /** The rules version expected (rules in force when saving, plus one), until confirmed. */
  version: number;
  state: "applying" | "applied" | "unknown";
}

/** A preview and what it was of. */
interface Preview {
  result: RulesPreview;
  source: "editor" | "import";
  /** The file's name for an export. */
  name?: string;
  /** rowsKey() of the editor, or the export's text, when it was asked. */
  key: string;
}

/** The classification rules: everyone reads, owners and admins edit or import. */
export function RulesPage() {
  const { session, reload: reloadOrg, timeZone, categoryColor } = useOrg();
  const edit = can(session.role).editRules;
  const [minPosition, setMinPosition] = useState(0n);
  const rules = useAsync(() => activity.getCategoryRules({ orgId: session.orgId, minPosition }), [session.orgId, minPosition]);
  const [rows, setRows] = useState<Row[]>([]);
  const [dirty, setDirty] = useState(false);
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState<string | null>(null);
  const [importText, setImportText] = useState<{ name: string; text: string } | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const [applying, setApplying] = useState<Applying | null>(null);
  const [preview, setPreview] = useState<Preview | null>(null);
  const previewCard = useRef<HTMLElement>(null);
  // The newest save's wait for its rules to be in force; older waits stop.
  const applyGeneration = useRef(0);
  useEffect(
    () => () => {
      applyGeneration.current += 1;
    },
    [],
  );

  useEffect(() => {
    if (rules.data) {
      setRows(rules.data.rules.map(toRow));
      setDirty(false);
    }
  }, [rules.data]);

  const update = (key: number, patch: Partial<Row>) => {
    setRows((rs) => rs.map((r) => (r.key === key ? { ...r, ...patch } : r)));
    setDirty(true);
  };
  const move = (index: number, by: number) => {
    setRows((rs) => {
      const j = index + by;
      if (j < 0 || j >= rs.length) return rs;
      const copy = [...rs];
      [copy[index], copy[j]] = [copy[j]!, copy[index]!];
      return copy;
    });
    setDirty(true);
  };
  const remove = (key: number) => {
    setRows((rs) => rs.filter((r) => r.key !== key));
    setDirty(true);
  };
  const add = (index: number) => {
    setRows((rs) => {
      const parent = rs[index];
      const row: Row = { key: nextKey++, path: parent ? `${parent.path} > ` : "", regex: "", ignoreCase: true, score: "" };
      const copy = [...rs];
      copy.splice(index + 1, 0, row);
      return copy;
    });
    setDirty(true);
  };

  async function send(what: string, key: string, request: { rules?: CategoryRule[]; activitywatchJson?: string }) {
    setBusy(what);
    setError(null);
    setDone(null);
    const expected = (rules.data?.rulesVersion ?? 0) + 1;
    try {
      const res = await runCommand(key, (commandId) => activity.setCategoryRules({ commandId, orgId: session.orgId, ...request }));
      setDone(`${res.categories} categor${res.categories === 1 ? "y" : "ies"} saved${res.duplicate ? " (already done before)" : ""}.`);
      setImportText(null);
      if (fileInput.current) fileInput.current.value = "";
      void follow(res.position, expected);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(null);
    }
  }

  /** Shows the saved rules' way into force, then reloads them and the org's colours. */
  async function follow(position: bigint, expected: number) {
    const mine = ++applyGeneration.current;
    const live = () => mine === applyGeneration.current;
    setApplying({ version: expected, state: "applying" });
    try {
      const inForce = await rulesInForce(session.orgId, position, live);
      if (!live()) return;
      if (!inForce) {
        setApplying({ version: expected, state: "unknown" });
        return;
      }
      noteApplied(position);
      setApplying({ version: inForce.rulesVersion, state: "applied" });
      if (position > minPosition) setMinPosition(position);
      else rules.reload();
      void reloadOrg(position);
    } catch (err) {
      if (!live()) return;
      setApplying({ version: expected, state: "unknown" });
      setError(err);
    }
  }

  async function runPreview(source: "editor" | "import") {
    let request: { rules?: CategoryRule[]; activitywatchJson?: string };
    let key: string;
    let name: string | undefined;
    if (source === "editor") {
      let list: CategoryRule[];
      try {
        list = toRules(rows);
      } catch (err) {
        setError(err);
        return;
      }
      if (list.length === 0) {
        setError(new Error("Add at least one category to preview."));
        return;
      }
      request = { rules: list };
      key = rowsKey(rows);
    } else {
      if (!importText) return;
      request = { activitywatchJson: importText.text };
      key = importText.text;
      name = importText.name;
    }
    setBusy(source === "editor" ? "preview" : "import-preview");
    setError(null);
    try {
      const result = await activity.previewCategoryRules({ orgId: session.orgId, ...request });
      setPreview({ result, source, key, ...(name !== undefined ? { name } : {}) });
      requestAnimationFrame(() => previewCard.current?.scrollIntoView({ behavior: "smooth", block: "start" }));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(null);
    }
  }

  function save() {
    let list: CategoryRule[];
    try {
      list = toRules(rows);
    } catch (err) {
      setError(err);
      return;
    }
    if (list.length === 0) {
      setError(new Error("Add at least one category, or use “Restore the default rules”."));
      return;
    }
    void send("save", `rules:${rowsKey(rows)}`, { rules: list });
  }

  function exportJson() {
    const text = rules.data?.activitywatchJson ?? "";
    const blob = new Blob([text], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = `${session.orgId}-categories.json`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // A preview no longer shows what it says once its rules were edited (or
  // another file chosen), or once other rules came into force.
  let stale: string | null = null;
  if (preview) {
    if (rules.data && rules.data.rulesVersion !== preview.result.rulesVersion) {
      stale = `The rules in force changed since this preview (now ${rules.data.rulesVersion === 0 ? "the default rules" : `version ${rules.data.rulesVersion}`}); press Preview again.`;
    } else if (preview.source === "editor" && rowsKey(rows) !== preview.key) {
      stale = "The rules were edited since this preview; press Preview again to see the effect of the edits.";
    } else if (preview.source === "import" && importText?.text !== preview.key) {
      stale = "Another file was chosen since this preview (or none); preview it again.";
    }
  }

  return (
    <>
      <div className="page-head">
        <h1>Classification rules</h1>
        {!edit && (
          <span className="tag" data-testid="read-only">
            Read-only
          </span>
        )}
      </div>
      <p className="muted">
        Categories in ActivityWatch's format: a path, a regular expression searched in the app, window title and URL (Rust <code>regex</code> syntax), and a
        productivity score from −100 to 100 (empty inherits the parent's). The deepest matching category wins; among equally deep ones the first listed.
      </p>
      {rules.error ? <ErrorAlert error={rules.error} /> : null}
      {rules.loading && !rules.data && <Loading />}
      {rules.data && (
        <Card
          title={rules.data.rulesVersion === 0 ? "Rules (the default rules)" : `Rules (version ${rules.data.rulesVersion})`}
          testId="rules-card"
          wide
          actions={
            <button type="button" className="small" onClick={exportJson} data-testid="rules-export">
              Export (ActivityWatch JSON)
            </button>
          }
        >
          <ErrorAlert error={error} />
          {done && <Notice testId="rules-saved">{done}</Notice>}
          {applying && <ApplyingStatus applying={applying} />}
          <div className="table-wrap" tabIndex={0}>
            <table className="rules-table" data-testid="rules-table">
              <thead>
                <tr>
                  <th>Category</th>
                  <th>Regex</th>
                  <th>Ignore case</th>
                  <th className="num">Score</th>
                  {edit && <th className="actions-col">Order</th>}
                </tr>
              </thead>
              <tbody>
                {rows.map((r, i) => (
                  <tr key={r.key} data-testid="rule-row">
                    <td>
                      {edit ? (
                        <input aria-label="Category path" data-testid="rule-path" value={r.path} onChange={(e) => update(r.key, { path: e.target.value })} placeholder="Work > Programming" />
                      ) : (
                        r.path
                      )}
                    </td>
                    <td>
                      {edit ? (
                        <input
                          aria-label="Regex"
                          className="mono"
                          data-testid="rule-regex"
                          value={r.regex}
                          onChange={(e) => update(r.key, { regex: e.target.value })}
                          placeholder="(no rule: groups its children)"
                          spellCheck={false}
                        />
                      ) : (
                        <code className="regex">{r.regex || "–"}</code>
                      )}
                    </td>
                    <td>
                      <input type="checkbox" aria-label="Ignore case" checked={r.ignoreCase} disabled={!edit || r.regex === ""} onChange={(e) => update(r.key, { ignoreCase: e.target.checked })} />
                    </td>
                    <td className="num">
                      {edit ? (
                        <input aria-label="Score" className="score" data-testid="rule-score" value={r.score} onChange={(e) => update(r.key, { score: e.target.value })} inputMode="numeric" placeholder="inherit" />
                      ) : (
                        r.score || "–"
                      )}
                    </td>
                    {edit && (
                      <td className="actions-col">
                        <div className="row-actions">
                          <button type="button" className="small" aria-label="Move up" onClick={() => move(i, -1)} disabled={i === 0}>
                            ↑
                          </button>
                          <button type="button" className="small" aria-label="Move down" onClick={() => move(i, 1)} disabled={i === rows.length - 1}>
                            ↓
                          </button>
                          <button type="button" className="small" aria-label="Add a category below" onClick={() => add(i)}>
                            +
                          </button>
                          <button type="button" className="small danger" aria-label="Remove" data-testid="rule-remove" onClick={() => remove(r.key)}>
                            ×
                          </button>
                        </div>
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {edit && (
            <div className="button-row">
              <button type="button" onClick={() => add(rows.length - 1)} data-testid="rule-add">
                Add a category
              </button>
              <button type="button" onClick={() => void runPreview("editor")} disabled={busy !== null || rows.length === 0} data-testid="rules-preview">
                {busy === "preview" ? "Previewing…" : "Preview"}
              </button>
              <button type="button" className="primary" onClick={save} disabled={busy !== null || !dirty} data-testid="rules-save">
                {busy === "save" ? "Saving…" : "Save rules"}
              </button>
              <button
                type="button"
                onClick={() => {
                  setRows(rules.data ? rules.data.rules.map(toRow) : []);
                  setDirty(false);
                  setError(null);
                }}
                disabled={!dirty || busy !== null}
                data-testid="rules-discard"
              >
                Discard changes
              </button>
              <button
                type="button"
                className="danger"
                data-testid="rules-defaults"
                disabled={busy !== null}
                onClick={() => {
                  if (window.confirm("Replace the rules with the default rules? Dashboards are reclassified.")) void send("defaults", "rules:defaults", { rules: [] });
                }}
              >
                Restore the default rules
              </button>
            </div>
          )}
        </Card>
      )}

      {edit && rules.data && (
        <section ref={previewCard} className="card card-wide scroll-target" data-testid="rules-preview-card">
          <header className="card-head">
            <h2>Preview</h2>
          </header>
          {preview ? (
            <PreviewResult preview={preview} stale={stale} timeZone={timeZone} categoryColor={categoryColor} />
          ) : (
            <p className="muted" data-testid="rules-preview-empty">
              Preview tries the rules in the editor, or a chosen ActivityWatch export, on the organization's last 7 days before anything is saved: the hours
              per category now and with the new rules, and how many would move to another category.
            </p>
          )}
        </section>
      )}

      {edit && (
        <Card title="Import from ActivityWatch" testId="rules-import" wide>
          <p className="muted">
            A category export of ActivityWatch (Settings → Categorization → Export, a JSON file). The server reads it as it is and replaces the rules with it; it
            names the category it cannot read.
          </p>
          <div className="inline-form">
            <input
              ref={fileInput}
              type="file"
              accept=".json,application/json"
              aria-label="ActivityWatch categories export (JSON)"
              data-testid="rules-import-file"
              onChange={(e) => {
                const file = e.target.files?.[0];
                setDone(null);
                setError(null);
                if (!file) {
                  setImportText(null);
                  return;
                }
                void file.text().then((text) => setImportText({ name: file.name, text }));
              }}
            />
            <button
              type="button"
              className="primary"
              data-testid="rules-import-submit"
              disabled={!importText || busy !== null}
              onClick={() => importText && void send("import", `rules-import:${importText.text}`, { activitywatchJson: importText.text })}
            >
              {busy === "import" ? "Importing…" : "Import and replace the rules"}
            </button>
            <button type="button" data-testid="rules-import-preview" disabled={!importText || busy !== null} onClick={() => void runPreview("import")}>
              {busy === "import-preview" ? "Previewing…" : "Preview this export"}
            </button>
          </div>
          {importText && <ImportSummary text={importText.text} name={importText.name} />}
        </Card>
      )}

    </>
  );
}

/** What the chosen file holds, as far as the browser can tell without the server's rules. */
function ImportSummary({ text, name }: { text: string; name: string }) {
  let summary: string;
  try {
    const value: unknown = JSON.parse(text);
    const list = Array.isArray(value) ? value : value && typeof value === "object" ? (value as { categories?: unknown }).categories : undefined;
    summary = Array.isArray(list) ? `${name}: ${list.length} categor${list.length === 1 ? "y" : "ies"}.` : `${name}: no “categories” list found; the server will say what is wrong.`;
  } catch {
    summary = `${name}: not valid JSON; the server will say where.`;
  }
  return (
    <p className="small" data-testid="rules-import-summary">
      {summary}
    </p>
  );
}

/** "Applying rules version N…", then "Rules version N is in force; …". */
function ApplyingStatus({ applying }: { applying: Applying }) {
  const { version, state } = applying;
  let message: string;
  if (state === "applying") message = `Applying rules version ${version}…`;
  else if (state === "unknown") message = "The rules are saved, but the page could not confirm that they are in force yet; reload the page later to see the rules in force.";
  else message = `Rules version ${version} is in force; dashboards are reclassified`;
  return (
    <div className={state === "applied" ? "alert alert-ok" : "alert alert-info"} role="status" aria-live="polite" data-testid="rules-status" data-state={state} data-version={version}>
      {message}
    </div>
  );
}

function signed(ms: number): string {
  if (ms === 0) return "–";
  return `${ms > 0 ? "+" : "−"}${duration(Math.abs(ms))}`;
}

/** The period, the totals, a chart and a table of hours per category now and with the new rules. */
function PreviewResult({ preview, stale, timeZone, categoryColor }: { preview: Preview; stale: string | null; timeZone: string; categoryColor: (path: string) => string }) {
  const { result } = preview;
  const total = Number(result.totalMs);
  const moved = Number(result.movedMs);
  const rows = useMemo(
    () =>
      result.categories
        .map((c) => ({ name: c.name, current: Number(c.currentMs), proposed: Number(c.proposedMs) }))
        .filter((c) => c.current > 0 || c.proposed > 0)
        .sort((a, b) => Math.max(b.current, b.proposed) - Math.max(a.current, a.proposed) || a.name.localeCompare(b.name)),
    [result],
  );
  const chart = useMemo<ChartConfiguration>(
    () => ({
      type: "bar",
      data: {
        labels: rows.map((r) => r.name),
        datasets: [
          { label: "Now", data: rows.map((r) => hours(r.current)), backgroundColor: "#94a3b8" },
          { label: "With the new rules", data: rows.map((r) => hours(r.proposed)), backgroundColor: rows.map((r) => categoryColor(r.name)) },
        ],
      },
      options: {
        indexAxis: "y",
        scales: { x: { beginAtZero: true, title: { display: true, text: "hours" } } },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 12 } },
          tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label ?? ""}: ${duration(Number(ctx.raw) * 3_600_000)}` } },
        },
      },
    }),
    [rows, categoryColor],
  );
  const of = preview.source === "import" ? `the export ${preview.name ?? ""}`.trim() : "the rules in the editor";
  const against = result.rulesVersion === 0 ? "the default rules" : `rules version ${result.rulesVersion}`;
  return (
    <div className={stale ? "preview stale" : "preview"} data-testid="rules-preview-result" data-stale={stale ? "true" : "false"} data-source={preview.source}>
      {stale && (
        <div className="alert alert-warn" role="status" data-testid="rules-preview-stale">
          {stale}
        </div>
      )}
      <p className="small" data-testid="rules-preview-period">
        {of[0]!.toUpperCase() + of.slice(1)} against {against} in force, over {result.from} to {result.to} (the last 7 days, {timeZone}).
      </p>
      <div className="stats stats-3">
        <div className="stat" data-testid="rules-preview-total" data-ms={total}>
          <div className="stat-value">{duration(total)}</div>
          <div className="stat-label">Time recorded</div>
        </div>
        <div className="stat" data-testid="rules-preview-moved" data-ms={moved}>
          <div className="stat-value">{duration(moved)}</div>
          <div className="stat-label">Would move to another category{total > 0 ? ` (${Math.round((moved / total) * 100)}%)` : ""}</div>
        </div>
        <div className="stat">
          <div className="stat-value">{rows.length}</div>
          <div className="stat-label">Categories with time</div>
        </div>
      </div>
      {total === 0 ? (
        <Notice testId="rules-preview-no-time">No time recorded in these days: nothing to compare.</Notice>
      ) : (
        <>
          <ChartView config={chart} height={Math.max(180, 70 + rows.length * 44)} testId="rules-preview-chart" label="Hours per category now and with the new rules" />
          <div className="table-wrap" tabIndex={0}>
            <table data-testid="rules-preview-table">
              <thead>
                <tr>
                  <th>Category</th>
                  <th className="num">Now</th>
                  <th className="num">With the new rules</th>
                  <th className="num">Change</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr key={r.name} data-testid="rules-preview-row" data-category={r.name} data-current-ms={r.current} data-proposed-ms={r.proposed}>
                    <td>
                      <span className="swatch" style={{ background: categoryColor(r.name) }} aria-hidden="true" /> {r.name}
                    </td>
                    <td className="num">{r.current ? duration(r.current) : "–"}</td>
                    <td className="num">{r.proposed ? duration(r.proposed) : "–"}</td>
                    <td className={r.proposed !== r.current ? "num changed" : "num"}>{signed(r.proposed - r.current)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </div>
  );
}

import { useEffect, useRef, useState } from "react";
import { create } from "@bufbuild/protobuf";
import { activity, can, runCommand } from "../api";
import { Card, ErrorAlert, Loading, Notice, useAsync } from "../components/ui";
import { CategoryRuleSchema, type CategoryRule } from "../gen/trackhrs/activity/v1/activity_pb";
import { useOrg } from "../org";

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

/** The classification rules: everyone reads, owners and admins edit or import. */
export function RulesPage() {
  const { session, reload: reloadOrg } = useOrg();
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
    try {
      const res = await runCommand(key, (commandId) => activity.setCategoryRules({ commandId, orgId: session.orgId, ...request }));
      setDone(`${res.categories} categor${res.categories === 1 ? "y" : "ies"} set${res.duplicate ? " (already done before)" : ""}. Dashboards are reclassified.`);
      setImportText(null);
      if (fileInput.current) fileInput.current.value = "";
      if (res.position > minPosition) setMinPosition(res.position);
      else rules.reload();
      void reloadOrg(res.position);
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
    void send("save", `rules:${JSON.stringify(rows.map(({ key: _k, ...r }) => r))}`, { rules: list });
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
          <div className="table-wrap">
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
          </div>
          {importText && <ImportSummary text={importText.text} name={importText.name} />}
        </Card>
      )}

      <Card title="Preview" testId="rules-preview-placeholder" wide>
        <p className="muted">
          Not available yet: the server has no preview call. Once it has one, this is where the rules being edited will be tried on recent activity before they
          are saved.
        </p>
      </Card>
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

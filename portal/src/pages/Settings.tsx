import { useEffect, useMemo, useState, type FormEvent } from "react";
import { can, orgs, runCommand } from "../api";
import { Card, ErrorAlert, Loading, Notice } from "../components/ui";
import { Weekday } from "../gen/trackhrs/org/v1/org_pb";
import { useOrg } from "../org";
import { WEEKDAYS } from "../time";

/** Time zone, work week and privacy policy (owners and admins; auditors read). */
export function SettingsPage() {
  const { session, org, orgError, reload } = useOrg();
  const edit = can(session.role).editSettings;
  const [timezone, setTimezone] = useState("");
  const [workWeek, setWorkWeek] = useState<Weekday[]>([]);
  const [titles, setTitles] = useState(false);
  const [urls, setUrls] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);

  const settings = org?.settings;
  useEffect(() => {
    if (!settings) return;
    setTimezone(settings.timezone);
    setWorkWeek([...settings.workWeek]);
    setTitles(settings.captureTitles);
    setUrls(settings.captureUrls);
  }, [settings]);

  const zones = useMemo(() => {
    try {
      return Intl.supportedValuesOf("timeZone");
    } catch {
      return [] as string[];
    }
  }, []);

  if (orgError && !org) return <ErrorAlert error={orgError} />;
  if (!org) return <Loading />;

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setSaved(false);
    try {
      const next = {
        timezone: timezone.trim(),
        workWeek: [...workWeek].sort((a, b) => a - b),
        captureTitles: titles,
        captureUrls: urls,
      };
      const r = await runCommand(`settings:${JSON.stringify(next)}`, (commandId) =>
        orgs.changeSettings({ commandId, orgId: session.orgId, settings: next }),
      );
      await reload(r.position);
      setSaved(true);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  const toggleDay = (day: Weekday, on: boolean) => setWorkWeek((w) => (on ? [...w.filter((d) => d !== day), day] : w.filter((d) => d !== day)));

  return (
    <>
      <div className="page-head">
        <h1>Settings</h1>
        {!edit && (
          <span className="tag" data-testid="read-only">
            Read-only
          </span>
        )}
      </div>
      <Card title={org.name || org.orgId} testId="settings-card" wide>
        <form className="settings-form" onSubmit={submit} data-testid="settings-form">
          <fieldset disabled={!edit || busy}>
            <label>
              Time zone
              <input
                list="zones"
                data-testid="settings-timezone"
                value={timezone}
                onChange={(e) => setTimezone(e.target.value)}
                placeholder="Europe/Berlin"
                spellCheck={false}
                required
              />
              <datalist id="zones">
                {zones.map((z) => (
                  <option key={z} value={z} />
                ))}
              </datalist>
              <span className="hint">Days on the dashboards are counted in this zone.</span>
            </label>
            <div className="field">
              <span className="field-label">Work week</span>
              <div className="days" data-testid="settings-workweek">
                {WEEKDAYS.map(({ day, short }) => (
                  <label key={day} className="check day">
                    <input type="checkbox" data-testid={`settings-day-${short.toLowerCase()}`} checked={workWeek.includes(day)} onChange={(e) => toggleDay(day, e.target.checked)} />
                    {short}
                  </label>
                ))}
              </div>
            </div>
            <div className="field">
              <span className="field-label">Privacy policy</span>
              <label className="check">
                <input type="checkbox" data-testid="settings-titles" checked={titles} onChange={(e) => setTitles(e.target.checked)} />
                Record window titles
              </label>
              <label className="check">
                <input type="checkbox" data-testid="settings-urls" checked={urls} onChange={(e) => setUrls(e.target.checked)} />
                Record URLs
              </label>
              <span className="hint">Agents drop what the policy forbids on the machine, before anything is stored or sent.</span>
            </div>
            {edit && (
              <button type="submit" className="primary" data-testid="settings-save">
                {busy ? "Saving…" : "Save settings"}
              </button>
            )}
          </fieldset>
        </form>
        <ErrorAlert error={error} />
        {saved && <Notice testId="settings-saved">Settings saved.</Notice>}
      </Card>
    </>
  );
}

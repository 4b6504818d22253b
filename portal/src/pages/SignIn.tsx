import { useState, type FormEvent } from "react";
import { signIn } from "../api";
import { ErrorAlert, Notice } from "../components/ui";
import { useRoute } from "../router";

export function SignInPage({ reason }: { reason?: string | undefined }) {
  const { params } = useRoute();
  const [org, setOrg] = useState(params.get("org") ?? "");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(org.trim(), email.trim(), password);
      setPassword("");
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="center">
      <form className="auth-card" onSubmit={submit} data-testid="signin-form">
        <h1>
          <span className="logo">TrackHrs</span> Sign in
        </h1>
        {reason && !error && <Notice testId="signin-reason">{reason}</Notice>}
        <label>
          Organization
          <input
            name="org"
            data-testid="signin-org"
            value={org}
            onChange={(e) => setOrg(e.target.value)}
            placeholder="acme"
            autoComplete="organization"
            autoCapitalize="none"
            spellCheck={false}
            required
          />
        </label>
        <label>
          E-mail
          <input
            name="email"
            type="email"
            data-testid="signin-email"
            value={email}
            onChange={(e) => setEmail(e.target.value)}
            autoComplete="username"
            required
          />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            data-testid="signin-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            autoComplete="current-password"
            required
          />
        </label>
        <ErrorAlert error={error} testId="signin-error" />
        <button type="submit" className="primary" disabled={busy} data-testid="signin-submit">
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}

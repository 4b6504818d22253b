import { useState, type FormEvent } from "react";
import { acceptInvitation } from "../api";
import { ErrorAlert } from "../components/ui";
import { navigate } from "../router";

/** `#/accept?org=<org>&token=<invitation token>`: set a password, then signed in. */
export function AcceptPage({ params }: { params: URLSearchParams }) {
  const org = params.get("org") ?? "";
  const token = params.get("token") ?? "";
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (password !== confirm) {
      setError(new Error("The two passwords differ."));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await acceptInvitation(org, token, password);
      navigate("dashboard", undefined, true);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  if (!org || !token) {
    return (
      <main className="center">
        <div className="auth-card">
          <h1>Invitation</h1>
          <div className="alert alert-error" role="alert" data-testid="accept-error">
            This invitation link is incomplete: it needs both the organization and the token.
          </div>
          <a href="#/signin">Go to sign-in</a>
        </div>
      </main>
    );
  }

  return (
    <main className="center">
      <form className="auth-card" onSubmit={submit} data-testid="accept-form">
        <h1>
          <span className="logo">TrackHrs</span> Join {org}
        </h1>
        <p className="muted">Choose your password (at least 12 characters) to accept the invitation.</p>
        <label>
          Password
          <input
            type="password"
            data-testid="accept-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            autoComplete="new-password"
            required
          />
        </label>
        <label>
          Repeat the password
          <input
            type="password"
            data-testid="accept-confirm"
            value={confirm}
            onChange={(e) => setConfirm(e.target.value)}
            autoComplete="new-password"
            required
          />
        </label>
        <ErrorAlert error={error} testId="accept-error" />
        <button type="submit" className="primary" disabled={busy} data-testid="accept-submit">
          {busy ? "Joining…" : "Set password and sign in"}
        </button>
      </form>
    </main>
  );
}

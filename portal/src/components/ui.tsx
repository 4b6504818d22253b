import { useCallback, useEffect, useRef, useState, type ReactNode } from "react";
import { errorMessage } from "../api";

/** A refused action or failed query: the server's message, visibly. */
export function ErrorAlert({ error, testId = "error" }: { error: unknown; testId?: string }) {
  if (error === null || error === undefined) return null;
  return (
    <div className="alert alert-error" role="alert" data-testid={testId}>
      {errorMessage(error)}
    </div>
  );
}

export function Notice({ children, testId }: { children: ReactNode; testId?: string }) {
  return (
    <div className="alert alert-info" role="status" data-testid={testId}>
      {children}
    </div>
  );
}

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <p className="muted" data-testid="loading">
      {what}…
    </p>
  );
}

export interface Async<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` when `deps` change (and on reload()); the newest answer wins. */
export function useAsync<T>(load: () => Promise<T>, deps: unknown[]): Async<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const generation = useRef(0);
  useEffect(() => {
    const mine = ++generation.current;
    setLoading(true);
    load().then(
      (value) => {
        if (mine !== generation.current) return;
        setData(value);
        setError(null);
        setLoading(false);
      },
      (err: unknown) => {
        if (mine !== generation.current) return;
        setError(err);
        setLoading(false);
      },
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, loading, reload };
}

/**
 * One button's action: busy while it runs, its error kept for display.
 * Returns [run, busy, error, clearError].
 */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = useCallback(async (action: () => Promise<unknown>) => {
    setBusy(true);
    setError(null);
    try {
      await action();
      return true;
    } catch (err) {
      setError(err);
      return false;
    } finally {
      setBusy(false);
    }
  }, []);
  const clear = useCallback(() => setError(null), []);
  return { run, busy, error, clear };
}

export function Card({ title, children, actions, testId, wide }: { title?: ReactNode; children: ReactNode; actions?: ReactNode; testId?: string; wide?: boolean }) {
  return (
    <section className={wide ? "card card-wide" : "card"} data-testid={testId}>
      {(title || actions) && (
        <header className="card-head">
          {title && <h2>{title}</h2>}
          {actions && <div className="card-actions">{actions}</div>}
        </header>
      )}
      {children}
    </section>
  );
}

// A tiny hash router: `#/page?key=value`, so the server needs no SPA fallback.

import { useSyncExternalStore } from "react";

export interface Route {
  page: string;
  params: URLSearchParams;
}

function parse(hash: string): Route {
  const raw = hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const page = (q < 0 ? raw : raw.slice(0, q)).replace(/\/+$/, "");
  return { page, params: new URLSearchParams(q < 0 ? "" : raw.slice(q + 1)) };
}

function subscribe(listener: () => void) {
  window.addEventListener("hashchange", listener);
  return () => window.removeEventListener("hashchange", listener);
}

/** The route the address bar holds now (not the one last rendered). */
export function currentRoute(): Route {
  return parse(window.location.hash);
}

export function useRoute(): Route {
  const hash = useSyncExternalStore(subscribe, () => window.location.hash);
  return parse(hash);
}

/** `#/page?params` for a link. */
export function href(page: string, params?: Record<string, string>): string {
  const q = params ? new URLSearchParams(params).toString() : "";
  return `#/${page}${q ? `?${q}` : ""}`;
}

export function navigate(page: string, params?: Record<string, string>, replace = false) {
  const target = href(page, params);
  if (replace) {
    window.history.replaceState(null, "", target);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  } else {
    window.location.hash = target;
  }
}

// Clients and the browser session.
//
// The session contract with the gateway: every Identity call carries
// `x-trackhrs-client: web`, so the gateway keeps the refresh token in an
// HttpOnly, SameSite=Strict cookie (path /trackhrs.org.v1.Identity/) and
// returns `Session.refresh_token` empty; Refresh and Logout with an empty
// token use the cookie. The access token lives in this module's memory only:
// never in localStorage, sessionStorage, IndexedDB or a readable cookie.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Identity, Organizations, Role, type Device, type Member, type Session } from "./gen/trackhrs/org/v1/org_pb";
import { Activity } from "./gen/trackhrs/activity/v1/activity_pb";
import { Operations } from "./gen/trackhrs/ops/v1/ops_pb";
import { Work } from "./gen/trackhrs/work/v1/work_pb";
import { Pay } from "./gen/trackhrs/pay/v1/pay_pb";

/** What the portal knows about the signed-in user (memory only). */
export interface SignedIn {
  orgId: string;
  personId: string;
  role: Role;
  accessToken: string;
  /** Unix milliseconds when the access token expires. */
  accessExpiresAt: number;
}

export type AuthState =
  | { status: "loading" }
  | { status: "signedOut"; reason?: string }
  | { status: "signedIn"; session: SignedIn };

const IDENTITY = "trackhrs.org.v1.Identity";

let state: AuthState = { status: "loading" };
const listeners = new Set<() => void>();
let refreshTimer: ReturnType<typeof setTimeout> | undefined;
// Only used when a gateway ignores the web header and returns the refresh
// token in the answer: then it is kept here, in memory, and never stored.
let memoryRefreshToken = "";

export function authState(): AuthState {
  return state;
}

export function subscribeAuth(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function setState(next: AuthState) {
  state = next;
  for (const listener of listeners) listener();
}

/** The signed-in session, or an error when there is none. */
export function currentSession(): SignedIn {
  if (state.status !== "signedIn") {
    throw new ConnectError("not signed in", Code.Unauthenticated);
  }
  return state.session;
}

// --- transports -----------------------------------------------------------

const webClientHeader: Interceptor = (next) => async (req) => {
  req.header.set("x-trackhrs-client", "web");
  return next(req);
};

/** Bearer token on every call; on UNAUTHENTICATED refresh once and retry. */
const bearer: Interceptor = (next) => async (req) => {
  if (req.service.typeName === IDENTITY) return next(req);
  const before = state.status === "signedIn" ? state.session.accessToken : "";
  if (before) req.header.set("authorization", `Bearer ${before}`);
  try {
    return await next(req);
  } catch (err) {
    const error = ConnectError.from(err);
    if (error.code !== Code.Unauthenticated || req.stream) throw err;
    // Another call may have refreshed meanwhile; else refresh now.
    const now = state.status === "signedIn" ? state.session.accessToken : "";
    const fresh = now && now !== before ? now : await refresh().catch(() => "");
    if (!fresh) {
      signedOut("Your session has ended. Please sign in again.");
      throw err;
    }
    req.header.set("authorization", `Bearer ${fresh}`);
    try {
      return await next(req);
    } catch (again) {
      if (ConnectError.from(again).code === Code.Unauthenticated) {
        signedOut("Your session has ended. Please sign in again.");
      }
      throw again;
    }
  }
};

const baseUrl = window.location.origin;

const identityTransport = createGrpcWebTransport({
  baseUrl,
  useBinaryFormat: true,
  interceptors: [webClientHeader],
});

const transport = createGrpcWebTransport({
  baseUrl,
  useBinaryFormat: true,
  interceptors: [bearer],
});

export const identity = createClient(Identity, identityTransport);
export const orgs = createClient(Organizations, transport);
export const activity = createClient(Activity, transport);
export const work = createClient(Work, transport);
export const pay = createClient(Pay, transport);
/** Read models and dead letters: owners and admins of the operator org only. */
export const ops = createClient(Operations, transport);

/** Largest page the gateway gives of members or devices. */
const PAGE = 1000;

/** Every row of a list paged by id (`after` / `nextAfter`), each page at
 * least at the first page's position. */
async function allPages<T>(
  minPosition: bigint,
  page: (after: string, minPosition: bigint) => Promise<{ rows: T[]; position: bigint; nextAfter: string }>,
): Promise<{ rows: T[]; position: bigint }> {
  const rows: T[] = [];
  let after = "";
  let position = minPosition;
  do {
    const got = await page(after, position);
    rows.push(...got.rows);
    position = got.position;
    if (got.nextAfter !== "" && got.nextAfter === after) throw new Error("the list did not advance");
    after = got.nextAfter;
  } while (after);
  return { rows, position };
}

/** Every member of the org the caller may list. */
export async function listAllMembers(orgId: string, minPosition = 0n): Promise<{ members: Member[]; position: bigint }> {
  const { rows, position } = await allPages(minPosition, async (after, min) => {
    const got = await orgs.listMembers({ orgId, minPosition: min, after, limit: PAGE });
    return { rows: got.members, position: got.position, nextAfter: got.nextAfter };
  });
  return { members: rows, position };
}

/** Every device the caller may list (only `personId`'s when given). */
export async function listAllDevices(
  orgId: string,
  minPosition = 0n,
  personId = "",
): Promise<{ devices: Device[]; position: bigint }> {
  const { rows, position } = await allPages(minPosition, async (after, min) => {
    const got = await orgs.listDevices({ orgId, minPosition: min, personId, after, limit: PAGE });
    return { rows: got.devices, position: got.position, nextAfter: got.nextAfter };
  });
  return { devices: rows, position };
}

// --- session lifecycle ----------------------------------------------------

function adopt(session: Session) {
  if (session.refreshToken) memoryRefreshToken = session.refreshToken;
  const signed: SignedIn = {
    orgId: session.orgId,
    personId: session.personId,
    role: session.role,
    accessToken: session.accessToken,
    accessExpiresAt: Number(session.accessExpiresAt) * 1000,
  };
  setState({ status: "signedIn", session: signed });
  schedule(signed.accessExpiresAt);
}

function schedule(expiresAt: number, delay?: number) {
  clearTimeout(refreshTimer);
  // About a minute before the access token expires; at least 30 s apart,
  // so a device clock ahead of the gateway's cannot make it refresh in a loop.
  const wait = delay ?? Math.max(30_000, expiresAt - Date.now() - 60_000);
  refreshTimer = setTimeout(() => {
    refresh().catch((err: unknown) => {
      const error = ConnectError.from(err);
      if (error.code === Code.Unauthenticated || error.code === Code.PermissionDenied) {
        signedOut("Your session has ended. Please sign in again.");
      } else if (state.status === "signedIn" && Date.now() < state.session.accessExpiresAt) {
        // Unreachable gateway: try again while the access token still works.
        schedule(expiresAt, 10_000);
      }
    });
  }, wait);
}

function signedOut(reason?: string) {
  clearTimeout(refreshTimer);
  memoryRefreshToken = "";
  setState(reason ? { status: "signedOut", reason } : { status: "signedOut" });
}

let inFlight: Promise<string> | null = null;

/**
 * Exchanges the refresh cookie for a new session and returns the new access
 * token. Concurrent callers share one call: a refresh token is single-use
 * and presenting a spent one revokes the whole log-in. Tabs of the same
 * browser take turns through a Web Lock, so each sends the newest cookie.
 */
export function refresh(): Promise<string> {
  if (!inFlight) {
    const run = async () => {
      const session = await identity.refresh({ refreshToken: memoryRefreshToken });
      adopt(session);
      return session.accessToken;
    };
    const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
    const call: Promise<string> = locks ? (async () => await locks.request("trackhrs-refresh", run))() : run();
    const shared = call.finally(() => {
      inFlight = null;
    });
    inFlight = shared;
    return shared;
  }
  return inFlight;
}

let started: Promise<void> | null = null;

/** On page load: a session from the refresh cookie, if there is one. */
export function startSession(): Promise<void> {
  if (!started) {
    started = refresh().then(
      () => undefined,
      () => {
        // Unless a sign-in on this page got there first.
        if (state.status === "loading") signedOut();
      },
    );
  }
  return started;
}

export async function signIn(orgId: string, email: string, password: string) {
  adopt(await identity.login({ orgId, email, password }));
}

export async function acceptInvitation(orgId: string, invitationToken: string, password: string) {
  adopt(await identity.acceptInvitation({ orgId, invitationToken, password }));
}

export async function signOut() {
  try {
    await identity.logout({ refreshToken: memoryRefreshToken });
  } finally {
    signedOut();
  }
}

// --- errors and commands --------------------------------------------------

/** The server's message for a refused call (ConnectError.rawMessage). */
export function errorMessage(err: unknown): string {
  if (err instanceof ConnectError) return err.rawMessage || Code[err.code];
  if (err instanceof Error) return err.message;
  return String(err);
}

function randomId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// Command ids of actions that failed for a transient reason, by what the
// action was: clicking the same action again (same fields) retries it with
// the same id, so the gateway recognises the repeat and stores nothing twice.
const pendingIds = new Map<string, string>();

const TRANSIENT = new Set([Code.Unavailable, Code.Aborted, Code.DeadlineExceeded, Code.Unknown, Code.Canceled]);

/**
 * Runs one user action that sends a command: `send` gets the action's
 * command id. A new id per click; the same id when the same action (same
 * `key`) is sent again after a transient failure, and for the automatic
 * retries of UNAVAILABLE and ABORTED here.
 */
export async function runCommand<T>(key: string, send: (commandId: string) => Promise<T>): Promise<T> {
  let id = pendingIds.get(key);
  if (!id) {
    id = randomId();
    pendingIds.set(key, id);
  }
  for (let attempt = 0; ; attempt++) {
    try {
      const result = await send(id);
      pendingIds.delete(key);
      return result;
    } catch (err) {
      const code = ConnectError.from(err).code;
      if (!TRANSIENT.has(code)) pendingIds.delete(key);
      if ((code === Code.Unavailable || code === Code.Aborted) && attempt < 2) {
        await new Promise((r) => setTimeout(r, 400 * (attempt + 1)));
        continue;
      }
      throw err;
    }
  }
}

// --- roles ----------------------------------------------------------------

export const ROLE_NAMES: Record<Role, string> = {
  [Role.UNSPECIFIED]: "Unknown",
  [Role.OWNER]: "Owner",
  [Role.ADMIN]: "Admin",
  [Role.MANAGER]: "Manager",
  [Role.EMPLOYEE]: "Employee",
  [Role.AUDITOR]: "Auditor",
};

export const ASSIGNABLE_ROLES: Role[] = [Role.OWNER, Role.ADMIN, Role.MANAGER, Role.EMPLOYEE, Role.AUDITOR];

/** What a role may see and do in the portal (domain/src/permissions.rs). */
export function can(role: Role) {
  const admin = role === Role.OWNER || role === Role.ADMIN;
  return {
    /** Team dashboards and anyone's timeline (else only their own). */
    seeTeam: role !== Role.EMPLOYEE,
    /** The member list (read). */
    readMembers: admin || role === Role.AUDITOR || role === Role.MANAGER,
    /** The Members page: owners and admins, auditors read-only. */
    membersPage: admin || role === Role.AUDITOR,
    manageMembers: admin,
    /** Every device of the org (else only their own). */
    readOrgDevices: admin || role === Role.AUDITOR || role === Role.MANAGER,
    /** The org's history (ListHistory). */
    readHistory: admin || role === Role.AUDITOR,
    settingsPage: admin || role === Role.AUDITOR,
    editSettings: admin,
    editRules: admin,
    /** Everyone but auditors may change anything of their own. */
    ownDevices: role !== Role.AUDITOR,
    /** Clients, projects and tasks. */
    manageProjects: admin || role === Role.MANAGER,
    /** Teams, their managers and members; attribution rules. */
    manageTeams: admin,
    /** Their own week (auditors change nothing). */
    ownWeek: role !== Role.AUDITOR,
    /** The approvals queue (managers: their teams'). */
    approvals: admin || role === Role.MANAGER,
    /** Reopen an approved week. */
    reopenWeeks: admin,
    /** Request leave for themselves (auditors change nothing). */
    requestLeave: role !== Role.AUDITOR,
    /** Approve or deny leave (managers: their teams'). */
    decideLeave: admin || role === Role.MANAGER,
    /** The pay policy, rates and payroll runs. */
    managePay: admin,
    /** Every member's pay (else their own; managers their teams' where the org allows). */
    readAllPay: admin || role === Role.AUDITOR,
  };
}

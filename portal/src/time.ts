// Days and hours in the organization's time zone (IANA name), with Intl only.

import { Weekday } from "./gen/trackhrs/org/v1/org_pb";

const partsCache = new Map<string, Intl.DateTimeFormat>();

function partsFormat(timeZone: string): Intl.DateTimeFormat {
  let f = partsCache.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    partsCache.set(timeZone, f);
  }
  return f;
}

/** A valid IANA zone, else UTC. */
export function safeZone(timeZone: string | undefined): string {
  if (!timeZone) return "UTC";
  try {
    new Intl.DateTimeFormat("en-US", { timeZone });
    return timeZone;
  } catch {
    return "UTC";
  }
}

interface Wall {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

function wall(ms: number, timeZone: string): Wall {
  const out: Record<string, number> = {};
  for (const p of partsFormat(timeZone).formatToParts(new Date(ms))) {
    if (p.type !== "literal") out[p.type] = Number(p.value);
  }
  return {
    year: out.year ?? 1970,
    month: out.month ?? 1,
    day: out.day ?? 1,
    hour: (out.hour ?? 0) % 24,
    minute: out.minute ?? 0,
    second: out.second ?? 0,
  };
}

/** The zone's offset from UTC at instant `ms`, in milliseconds. */
function offset(ms: number, timeZone: string): number {
  const w = wall(ms, timeZone);
  const asUtc = Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second);
  return asUtc - Math.floor(ms / 1000) * 1000;
}

/** YYYY-MM-DD of instant `ms` in the zone. */
export function dayOf(ms: number, timeZone: string): string {
  const w = wall(ms, timeZone);
  return `${w.year}-${pad(w.month)}-${pad(w.day)}`;
}

export function today(timeZone: string): string {
  return dayOf(Date.now(), timeZone);
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}

function parseDay(day: string): [number, number, number] {
  const [y, m, d] = day.split("-").map(Number);
  return [y ?? 1970, m ?? 1, d ?? 1];
}

/** The instant the day starts in the zone (midnight, or the first hour that exists). */
export function startOfDay(day: string, timeZone: string): number {
  const [y, m, d] = parseDay(day);
  const utc = Date.UTC(y, m - 1, d);
  let guess = utc - offset(utc, timeZone);
  guess = utc - offset(guess, timeZone);
  return guess;
}

/** The instant of wall-clock time `hhmm` ("HH:MM") on `day` in the zone. */
export function atLocal(day: string, hhmm: string, timeZone: string): number {
  const [y, m, d] = parseDay(day);
  const [h, mi] = hhmm.split(":").map(Number);
  const utc = Date.UTC(y, m - 1, d, h ?? 0, mi ?? 0);
  let guess = utc - offset(utc, timeZone);
  guess = utc - offset(guess, timeZone);
  return guess;
}

/** Days from `day` (calendar arithmetic, no zone involved). */
export function addDays(day: string, n: number): string {
  const [y, m, d] = parseDay(day);
  const t = new Date(Date.UTC(y, m - 1, d + n));
  return `${t.getUTCFullYear()}-${pad(t.getUTCMonth() + 1)}-${pad(t.getUTCDate())}`;
}

/** ISO weekday of a calendar day: 1 = Monday ... 7 = Sunday (as the proto's Weekday). */
export function weekdayOf(day: string): Weekday {
  const [y, m, d] = parseDay(day);
  const js = new Date(Date.UTC(y, m - 1, d)).getUTCDay();
  return (js === 0 ? 7 : js) as Weekday;
}

/** Every day from `from` to `to`, inclusive. */
export function daysBetween(from: string, to: string): string[] {
  const out: string[] = [];
  for (let d = from; d <= to && out.length < 400; d = addDays(d, 1)) out.push(d);
  return out;
}

/**
 * This week in the zone: from its first to its last work day (Monday-based
 * weeks; the whole week when the org has no work week set).
 */
export function thisWeek(timeZone: string, workWeek: Weekday[]): { from: string; to: string } {
  const now = today(timeZone);
  const monday = addDays(now, -(weekdayOf(now) - 1));
  const days = workWeek.filter((w) => w >= Weekday.MONDAY && w <= Weekday.SUNDAY);
  if (days.length === 0) return { from: monday, to: addDays(monday, 6) };
  const first = Math.min(...days);
  const last = Math.max(...days);
  return { from: addDays(monday, first - 1), to: addDays(monday, last - 1) };
}

/** "7h 05m", "12m", "40s". */
export function duration(ms: number | bigint): string {
  const total = Math.round(Number(ms) / 1000);
  if (total < 60) return `${total}s`;
  const minutes = Math.floor(total / 60);
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return h > 0 ? `${h}h ${pad(m)}m` : `${m}m`;
}

export function hours(ms: number | bigint): number {
  return Math.round((Number(ms) / 3_600_000) * 100) / 100;
}

const clockCache = new Map<string, Intl.DateTimeFormat>();

/** "14:05" in the zone. */
export function clock(ms: number, timeZone: string, seconds = false): string {
  const key = `${timeZone}|${seconds}`;
  let f = clockCache.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat("en-GB", {
      timeZone,
      hour: "2-digit",
      minute: "2-digit",
      ...(seconds ? { second: "2-digit" as const } : {}),
      hourCycle: "h23",
    });
    clockCache.set(key, f);
  }
  return f.format(new Date(ms));
}

export const WEEKDAYS: { day: Weekday; short: string }[] = [
  { day: Weekday.MONDAY, short: "Mon" },
  { day: Weekday.TUESDAY, short: "Tue" },
  { day: Weekday.WEDNESDAY, short: "Wed" },
  { day: Weekday.THURSDAY, short: "Thu" },
  { day: Weekday.FRIDAY, short: "Fri" },
  { day: Weekday.SATURDAY, short: "Sat" },
  { day: Weekday.SUNDAY, short: "Sun" },
];

/** "2026-03-05 14:05:09" of instant `ms` in the zone. */
export function dateTime(ms: number, timeZone: string): string {
  return `${dayOf(ms, timeZone)} ${clock(ms, timeZone, true)}`;
}

/** `minor` units of a currency with `digits` decimals: "1,237.63". */
export function money(minor: bigint | number, digits: number): string {
  const n = BigInt(minor);
  const negative = n < 0n;
  const abs = negative ? -n : n;
  const scale = 10n ** BigInt(digits);
  const whole = (abs / scale).toLocaleString("en-US");
  const fraction = digits > 0 ? `.${(abs % scale).toString().padStart(digits, "0")}` : "";
  return `${negative ? "-" : ""}${whole}${fraction}`;
}

// Client-side classification of raw timeline events for colouring only,
// with the org's rules (GetCategoryRules), as the server's classifier does:
// a rule's regex searched in every string of the event's data (app, title,
// url, ...), the deepest matching category wins, the first listed on ties.
// Regexes are in the Rust `regex` crate's syntax; the few that JavaScript
// cannot compile match nothing here (the dashboards, classified by the
// server, are authoritative).

import type { CategoryRule } from "./gen/trackhrs/activity/v1/activity_pb";

export const UNCATEGORIZED = "Uncategorized";

interface Compiled {
  path: string;
  depth: number;
  re: RegExp;
}

export class Classifier {
  private readonly rules: Compiled[] = [];

  constructor(rules: CategoryRule[]) {
    for (const rule of rules) {
      if (rule.regex === undefined || rule.regex === "") continue;
      const re = compile(rule.regex, rule.ignoreCase);
      if (re) this.rules.push({ path: rule.name.join(" > "), depth: rule.name.length, re });
    }
  }

  /** The category path (joined with " > ") of an event's data. */
  classify(data: Record<string, unknown>): string {
    const texts = Object.values(data).filter((v): v is string => typeof v === "string" && v !== "");
    let best: Compiled | undefined;
    for (const rule of this.rules) {
      if (best && rule.depth <= best.depth) continue;
      if (texts.some((t) => rule.re.test(t))) best = rule;
    }
    return best ? best.path : UNCATEGORIZED;
  }
}

function compile(source: string, ignoreCase: boolean): RegExp | null {
  let flags = ignoreCase ? "i" : "";
  let pattern = source;
  // A leading inline flag group such as (?i) or (?is).
  const inline = /^\(\?([imsx]+)\)/.exec(pattern);
  if (inline) {
    pattern = pattern.slice(inline[0].length);
    for (const f of inline[1]!) if (f !== "x" && !flags.includes(f)) flags += f;
  }
  for (const extra of ["u", ""]) {
    try {
      return new RegExp(pattern, flags + extra);
    } catch {
      // try the next set of flags
    }
  }
  return null;
}
